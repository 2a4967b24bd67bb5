#!/usr/bin/env bash
# The contract's guard (make contract, part of make lint and so of CI): `buf lint` on protos/,
# then `buf breaking` against protos/ as it was at the previous commit, so a change that would
# break clients generated from it (a renumbered or retyped field, a removed RPC, ...) fails CI.
# buf comes from npm (tools/buf, pinned by its lock file); it needs no network once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=tools/buf/node_modules/.bin/buf
if [ ! -x "$BUF" ]; then
  npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error
fi
"$BUF" lint
echo "contract: buf lint passed"
if git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  "$BUF" breaking --against ".git#ref=HEAD~1"
  echo "contract: no breaking change against HEAD~1 ($(git rev-parse --short HEAD~1))"
else
  # The first commit with buf.yaml, or a clone without history: say so rather than pass quietly.
  echo "contract: HEAD~1 has no buf.yaml (or there is no previous commit); buf breaking not run"
fi
