"""The operator kit in deploy/, checked with the real tools: promtool validates and unit-tests the
alert rules and the Prometheus config; a real Prometheus scrapes a real meter, loads the rules and
runs every dashboard query; every metric the alerts and the dashboard name is one meter exposes;
the compose file and the example configs are what they say.

promtool and prometheus come from Debian's `prometheus` package (.ci/run installs it); without
them those tests skip and say so."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import StartMeter

from meter.callers_config import load as load_callers
from meter.config import VARIABLES, ConfigError, Settings
from meter.domain.callers import ROLES, hash_token, new_token
from meter.grpc.server import METHODS
from meter.v1 import meter_pb2 as pb
from meterlab.testbed import free_port
from support import RunningMeter, eventually

yaml = pytest.importorskip("yaml", reason="PyYAML (installed with sqlfluff, a dev dependency) reads the kit's YAML")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "meter-dashboard.json"
METRIC_NAME = re.compile(r"\bmeter_[a-z_]+")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: apt-get install prometheus")
    return path


def run(*command: str, cwd: Path = ROOT) -> str:
    """A tool's output (stdout and stderr); the test fails, showing it, if the tool does."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every panel's PromQL, with Grafana's $__rate_interval made a duration Prometheus takes."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$__rate_interval", "1m") for panel in panels for target in panel["targets"]]


# --- promtool ------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    output = run(tool("promtool"), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_the_rules_unit_tests_pass() -> None:
    output = run(tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in output


def test_every_alert_is_runbook_ready_and_tested_both_ways() -> None:
    """Each rule waits (`for`), has a severity and says what to do; alerts.test.yml has, for
    each, series that fire it and series that do not (promtool runs them, above)."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = []
    for rule in alert_rules():
        names.append(rule["alert"])
        assert rule.get("for"), f"{rule['alert']}: no `for:`"
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40, rule["alert"]
    assert len(names) == len(set(names)), "an alert name is used twice"
    assert set(names) <= fired, f"never fired in alerts.test.yml: {set(names) - fired}"
    assert set(names) <= quiet, f"never shown quiet in alerts.test.yml: {set(names) - quiet}"


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """A copy of deploy/prometheus/ alone: the config finds its rule file beside it, as in the
    container (/etc/prometheus), and scrapes meter:8080 as job "meter"."""
    copy = shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    output = run(tool("promtool"), "check", "config", str(copy / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output
    config = yaml.safe_load((copy / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "meter"
    assert job["static_configs"] == [{"targets": ["meter:8080"]}]


# --- a real Prometheus against a real meter --------------------------------------------------------


async def metrics_text(meter: RunningMeter) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://{meter.service.webhooks.address}/metrics") as r:
        assert r.status == 200
        return await r.text()


def exposed_names(exposition: str) -> set[str]:
    """The series names meter's exposition gives Prometheus, from its `# TYPE` lines (present even
    for a labelled metric nothing has counted yet): a counter's name already ends in _total, a
    histogram's series are _bucket, _sum and _count."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


async def test_every_metric_the_kit_names_is_exposed(meters: StartMeter) -> None:
    """Exact names, suffixes included: `meter_rpcs` for `meter_rpcs_total`, or a histogram's
    bare name, would match nothing in Prometheus."""
    exposed = exposed_names(await metrics_text(await meters()))
    used = {
        "alerts.yml": {name for rule in alert_rules() for name in METRIC_NAME.findall(rule["expr"])},
        "meter-dashboard.json": {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)},
    }
    for source, names in used.items():
        assert names, source
        assert names <= exposed, f"{source} names metrics meter does not expose: {sorted(names - exposed)}"


class Prometheus:
    """A real Prometheus server in a subprocess, its log in a file (a pipe nobody reads could fill)."""

    def __init__(self, config: Path, url: str, log: Path) -> None:
        self.config, self.url, self.log = config, url, log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                tool("prometheus"),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.config.parent / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def get(self, session: aiohttp.ClientSession, path: str, **params: str) -> Any:
        """An API answer's data; None until Prometheus listens and is ready (it answers 503 while
        it opens its storage). Fails at once, with its log, if it has exited."""
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"prometheus exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            async with session.get(self.url + path, params=params) as response:
                if response.status == 503:
                    return None
                body = await response.json()
        except aiohttp.ClientConnectionError:
            return None
        assert body["status"] == "success", body
        return body["data"]


async def test_prometheus_scrapes_meter_and_loads_the_alerts(meters: StartMeter, tmp_path: Path) -> None:
    tool("prometheus")
    meter = await meters()
    for _ in range(3):
        await meter.stub.GetCatalog(pb.GetCatalogRequest())
    # The kit's rules as they are; the scrape as deploy/prometheus/prometheus.yml's, but of this
    # meter and every second, so that the test waits seconds, not minutes.
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "meter", "static_configs": [{"targets": [meter.service.webhooks.address]}]}],
    }
    server = Prometheus(tmp_path / "prometheus.yml", f"http://127.0.0.1:{free_port()}", tmp_path / "prometheus.log")
    server.config.write_text(yaml.safe_dump(config))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def targets() -> Any:
                return await server.get(session, "/api/v1/targets")

            found = await eventually(
                targets,
                lambda data: bool(data and data["activeTargets"] and data["activeTargets"][0]["health"] == "up"),
                within=30,
            )
            [target] = found["activeTargets"]
            assert target["labels"]["job"] == "meter"
            assert target["scrapeUrl"] == f"http://{meter.service.webhooks.address}/metrics"

            async def catalog_calls() -> Any:
                return await server.get(
                    session, "/api/v1/query", query='meter_rpcs_total{method="GetCatalog",code="OK"}'
                )

            series = await eventually(catalog_calls, lambda data: bool(data and data["result"]), within=30)
            assert float(series["result"][0]["value"][1]) >= 3

            async def rules() -> Any:
                return await server.get(session, "/api/v1/rules")

            def all_evaluated(data: Any) -> bool:
                loaded = [rule for group in data["groups"] for rule in group["rules"]] if data else []
                return bool(loaded) and all(rule["health"] != "unknown" for rule in loaded)

            loaded = await eventually(rules, all_evaluated, within=30)
            health = {
                rule["name"]: (rule["health"], rule.get("lastError", ""))
                for g in loaded["groups"]
                for rule in g["rules"]
            }
            assert health == {rule["alert"]: ("ok", "") for rule in alert_rules()}

            # Every dashboard query parses and runs in this Prometheus.
            for query in dashboard_queries():
                answer = await server.get(session, "/api/v1/query", query=query)
                assert answer["resultType"] == "vector", query
    finally:
        await server.stop()


# --- compose and the example configs ---------------------------------------------------------------


def test_compose_runs_meter_with_postgres_and_prometheus() -> None:
    """No Docker engine here: the file is read as YAML and checked for what `up` needs."""
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert {"meter", "postgres", "prometheus"} <= set(services)
    for name, service in services.items():
        if "image" in service:
            image, _, tag = service["image"].partition(":")
            assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?", tag), (
                f"{name}: pin {image} to a version, not {tag!r}"
            )
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                # callers.toml is the operator's copy of the example.
                shipped = DEPLOY / source.replace("callers.toml", "callers.example.toml")
                assert shipped.exists(), f"{name} mounts {source}, which deploy/ does not have"
    meter = services["meter"]
    assert (DEPLOY / meter["build"] / "Dockerfile").is_file()
    assert meter["env_file"] == "meter.env" and (DEPLOY / "meter.env.example").is_file()
    assert "@postgres:5432/" in meter["environment"]["METER_DATABASE_URL"]
    assert meter["environment"]["METER_GRPC_ADDR"].startswith("0.0.0.0:")
    assert meter["environment"]["METER_HTTP_ADDR"] == "0.0.0.0:8080"  # prometheus.yml scrapes meter:8080
    assert meter["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_the_callers_example_is_a_callers_file_once_the_hashes_are_pasted() -> None:
    text = (DEPLOY / "callers.example.toml").read_text()
    placeholder = re.compile(r'token_sha256 = "<[^"]*>"')
    with pytest.raises(ConfigError, match="token_sha256 must be 64 lowercase hex digits"):
        load_callers(text, "callers.example.toml", METHODS)  # meter refuses to start with placeholders
    filled = placeholder.sub(lambda _: f'token_sha256 = "{hash_token(new_token())}"', text)
    load_callers(filled, "callers.example.toml", METHODS)  # raises ConfigError on any other mistake
    roles = {entry["role"] for entry in tomllib.loads(filled)["caller"]}
    assert roles == set(ROLES) == {"proxy", "billing", "storefront", "operator"}


def test_the_env_example_names_only_settings_meter_reads() -> None:
    text = (DEPLOY / "meter.env.example").read_text()
    read_by_meter = set(VARIABLES.values())
    named = set(re.findall(r"^#? ?(METER_[A-Z_]+)=", text, re.M))
    assert named and named <= read_by_meter, f"not read by meter: {sorted(named - read_by_meter)}"
    values = dict(re.findall(r"^(METER_[A-Z_]+)=(.*)$", text, re.M))
    assert "METER_DATABASE_URL" not in values  # compose.yaml sets it, for the postgres service
    Settings.from_env(values)  # the values set are valid
