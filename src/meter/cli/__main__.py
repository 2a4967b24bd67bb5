"""`python -m meter.cli`: the `meter` command, without its console script (the tests and the lab
run it so, with the interpreter they run under)."""

import sys

from meter.cli import main

sys.exit(main())
