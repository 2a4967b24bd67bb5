"""Options more than one command takes, defined once."""

from __future__ import annotations

import argparse


def json_option(parser: argparse.ArgumentParser, help: str) -> None:
    """--json on a command that can print JSON. `meter --json X` works as well as `meter X --json`:
    the top-level parser has the option too (default False), and a command's own default is
    SUPPRESS, since argparse lets a subcommand's defaults overwrite what was given before it.
    The command is marked as printing JSON, so that --json before one that cannot is refused."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=help)
    parser.set_defaults(prints_json=True)
