"""`meter bench --against REV`: this checkout against another revision, side by side.

Whole `meter bench` runs one after the other swing by ±20 % on this machine, more than most
changes move a figure. Here both servers run at once, each its own code on a database its own
migrations made (one PostgreSQL holds both), and the closed-loop scenarios alternate between them
round after round, the order reversed every other round: the noise falls on both alike, and the
ratios this prints are what a change did.

The other revision is extracted with `git archive` into the bench's data folder (no worktree, no
install: its src/ goes first on PYTHONPATH, with its generated code where an install would put
it), so it must be a revision of the repository the command runs in.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from meterlab.bench import seed
from meterlab.bench.compare import Comparison, Configuration, compare
from meterlab.bench.runner import Options

SCENARIOS = {
    "many accounts": seed.MANY,
    "hot account": seed.HOT,
    "hot account, single bucket": seed.SINGLE_BUCKET,
    "many accounts, limits on": seed.MANY_LIMITED,
    "hot account, limits on": seed.HOT_LIMITED,
}


async def against(options: Options, revision: str) -> Comparison:
    """The scenarios on this checkout ("this") and on `revision` ("REV"), side by side."""
    source = checkout(revision, options.data_dir / "against")
    configurations = {revision: Configuration(source=source), "this": Configuration()}
    return await compare(options, "meter_bench_against", configurations, f"against {revision}", SCENARIOS)


def checkout(revision: str, into: Path) -> Path:
    """The tree of `revision`, extracted into a fresh folder under `into`."""
    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}").decode().strip()
    tree = into / commit[:12]
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", commit))) as archive:
        archive.extractall(tree, filter="data")
    generated, package = tree / "generated" / "meter" / "v1", tree / "src" / "meter" / "v1"
    if generated.is_dir() and not package.exists():
        package.symlink_to(generated.resolve(), target_is_directory=True)  # pyproject's package-dir
    return tree


def ratios(comparison: Comparison, revision: str) -> str:
    """this / REV per scenario: loops per second, and meter's and PostgreSQL's CPU per loop."""
    scenarios = comparison.report.scenarios
    out = []
    for scenario in SCENARIOS:
        this, other = scenarios[f"{scenario}, this"], scenarios[f"{scenario}, {revision}"]
        line = (
            f"{scenario}: this/{revision} loops/s {this.loops_per_second / other.loops_per_second:.3f}, "
            f"meter CPU per loop {this.meter_cpu_seconds_per_1000_loops / other.meter_cpu_seconds_per_1000_loops:.3f}"
        )
        if other.postgres_cpu_seconds_per_1000_loops:  # measured only on the lab's embedded PostgreSQL
            postgres = this.postgres_cpu_seconds_per_1000_loops / other.postgres_cpu_seconds_per_1000_loops
            line += f", PostgreSQL CPU per loop {postgres:.3f}"
        out.append(line)
    return "\n".join(out)


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], check=True, capture_output=True).stdout
