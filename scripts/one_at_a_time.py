"""Run a command while holding a lock file, so that a second `make` run while the first is still
installing into .venv waits for it (saying so) instead of failing half-way in pip.

    python3 scripts/one_at_a_time.py LOCKFILE -- COMMAND [ARG ...]

Standard library only: it runs before the virtual environment exists. flock(1) would do, but
macOS has none."""

from __future__ import annotations

import fcntl
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    path, command = argv[0], argv[2:]
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("make: another make is installing into .venv; waiting for it to finish", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
