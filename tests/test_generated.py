"""generated/ is exactly what `make proto` produces from protos/ (regenerate and commit if not)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "scripts" / "generate_protos.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(tmp_path)

    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    checked_in = {
        p.relative_to(ROOT / "generated"): p.read_bytes()
        for p in (ROOT / "generated").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(checked_in), "generated/ has missing or extra files: run `make proto`"
    stale = [str(name) for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"generated/ is stale ({', '.join(stale)}): run `make proto` and commit"


def test_generated_package_imports_as_meter_v1() -> None:
    from meter.v1 import error_reason_pb2, meter_pb2, meter_pb2_grpc

    assert meter_pb2.DESCRIPTOR.package == "meter.v1"
    assert "MeterService" in meter_pb2.DESCRIPTOR.services_by_name
    assert hasattr(meter_pb2_grpc, "MeterServiceStub")
    assert error_reason_pb2.ErrorReason.Name(error_reason_pb2.ERROR_REASON_INSUFFICIENT_TOKENS).endswith(
        "INSUFFICIENT_TOKENS"
    )
