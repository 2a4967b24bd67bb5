"""The metering domain: amounts, ids, holds, pools, periods, balances and errors.

Pure Python: imports nothing of gRPC, SQL or the environment, so it can be tested alone.
"""
