"""meter: holds, charges and credits the token balances of an LLM product.

Layers, dependencies pointing inward: entry points (`grpc/`, `cli/`) -> use cases (`service/`)
-> `domain/` (pure Python); `storage/` implements the port the use cases need; `bootstrap.py`
wires them together. Nothing runs at import time.
"""
