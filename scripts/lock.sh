#!/usr/bin/env sh
# `make lock`: the exact version of every dependency, written by resolving pyproject.toml's
# ranges in fresh virtual environments (pip's own resolver; nothing else to install):
#   requirements/image.txt        what the service needs: the image's dependency layer
#   requirements/constraints.txt  everything (the service, the embedded PostgreSQL, the dev tools
#                                 and the lab): `make run` and `make test` install under it
# Run it after changing a dependency in pyproject.toml or lab/pyproject.toml, and commit both.
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

freeze() {  # freeze VENV OUT DESCRIPTION
  {
    echo "# $3"
    echo "# Written by \`make lock\` (scripts/lock.sh) from pyproject.toml; do not edit by hand."
    "$1/bin/pip" freeze --disable-pip-version-check --exclude meter --exclude meter-lab
  } > "$2"
}

"$python" -m venv "$work/image"
"$work/image/bin/pip" install --quiet --disable-pip-version-check .
freeze "$work/image" requirements/image.txt "The service's dependencies, exactly: the container image installs these."

"$python" -m venv "$work/all"
"$work/all/bin/pip" install --quiet --disable-pip-version-check '.[dev,embedded]' ./lab
freeze "$work/all" requirements/constraints.txt "Every dependency, exactly: make run and make test install under these constraints."
