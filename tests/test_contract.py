"""The contract's guard works: buf lint passes on protos/, and buf breaking, run as CI runs it
(against the previous commit), refuses an incompatible change and lets a compatible one pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        subprocess.run(
            ["npm", "ci", "--prefix", str(BUF.parents[2]), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
            timeout=600,
        )
    return BUF


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def contract_repo(tmp_path: Path) -> Path:
    """A git repository holding the contract as it is now, committed."""
    repo = tmp_path / "contract"
    repo.mkdir()
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(ROOT / "protos", repo / "protos")
    shutil.copytree(ROOT / "third_party", repo / "third_party")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "contract")
    return repo


def change_and_check(buf: Path, repo: Path, old: str, new: str) -> subprocess.CompletedProcess[str]:
    proto = repo / "protos" / "meter" / "v1" / "meter.proto"
    text = proto.read_text()
    assert text.count(old) == 1, old
    proto.write_text(text.replace(old, new))
    git(repo, "commit", "-qam", "change")
    return subprocess.run(
        [str(buf), "breaking", "--against", ".git#ref=HEAD~1"], cwd=repo, capture_output=True, text=True, check=False
    )


def test_buf_lint_passes_on_the_contract(buf: Path) -> None:
    done = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_renumbered_field_is_refused(buf: Path, tmp_path: Path) -> None:
    done = change_and_check(buf, contract_repo(tmp_path), "  string caller = 10;", "  string caller = 12;")
    assert done.returncode != 0
    assert 'present field "10" with name "caller" on message "LedgerEntry" was deleted' in done.stdout, done.stdout


def test_a_removed_rpc_is_refused(buf: Path, tmp_path: Path) -> None:
    rpc = "  rpc ListOpenReservations(ListOpenReservationsRequest) returns (ListOpenReservationsResponse);"
    done = change_and_check(buf, contract_repo(tmp_path), rpc, "")
    assert done.returncode != 0
    assert 'RPC "ListOpenReservations" on service "MeterService" was deleted' in done.stdout, done.stdout


def test_a_new_field_is_compatible(buf: Path, tmp_path: Path) -> None:
    done = change_and_check(
        buf, contract_repo(tmp_path), "  string caller = 10;", "  string caller = 10;\n  string origin = 12;"
    )
    assert done.returncode == 0, done.stdout + done.stderr
