"""The Grafana dashboard as code (deploy/grafana/dashboard.py, grafana-foundation-sdk): the generator reproduces
the committed deploy/grafana/frosted-dashboard.json byte for byte; every panel's PromQL parses (promtool) and
names metrics the code exposes; and, against a real Prometheus scraping a live agent (a real RTSP camera) and
tail, every panel's query returns data, as Grafana would run it. The Triton row's queries (nv_inference_*, Triton's
own metrics) are parsed and name-checked here, and return data in tests/test_dashboard_triton.py, against a
Prometheus scraping a real tritonserver that serves the tail. The alert rules keep their promtool tests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.waiting import wait_until_sync

GRAFANA = REPO / "deploy" / "grafana"
GENERATOR = GRAFANA / "dashboard.py"
DASHBOARD = GRAFANA / "frosted-dashboard.json"
PROVISIONING = GRAFANA / "provisioning"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def load_script(path: Path, name: str) -> ModuleType:
    """A script under deploy/ (not a package), loaded from its path once (registered first, for dataclasses)."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    pytest.importorskip("grafana_foundation_sdk", reason="the dev extra's grafana-foundation-sdk (Grafana 11 build)")
    return load_script(GENERATOR, "frosted_grafana_dashboard")


def checker() -> ModuleType:
    """deploy/check_examples.py: its PromQL check (metrics and labels the code exposes)."""
    return load_script(REPO / "deploy" / "check_examples.py", "check_examples")


# --- the committed dashboard, as Grafana reads it ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    row: str
    panel: str
    kind: str
    ref: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.panel!r} {self.ref}"


def committed() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def targets(dashboard: dict[str, Any]) -> list[Target]:
    """Every query of every chart, with the row it sits under (an open row's charts follow it; a collapsed row
    holds its own)."""
    found: list[Target] = []
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            nested = panel.get("panels", [])
        else:
            nested = [panel]
        for chart in nested:
            found += [Target(row, chart["title"], chart["type"], t["refId"], t["expr"]) for t in chart["targets"]]
    return found


# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval), the scrape interval being the
# datasource's timeInterval (grafana.com/docs: "$__rate_interval"). A query_range step stands in for $__interval.
def rate_interval(scrape_seconds: float, step_seconds: float) -> str:
    return f"{max(step_seconds + scrape_seconds, 4 * scrape_seconds):g}s"


def substitute(expr: str, camera: str, rate: str) -> str:
    """``expr`` as Grafana sends it: the camera variable (a regex: one camera's name, or the All value .*) and
    the rate window filled in. Fails on any variable left over, which Prometheus would reject."""
    text = expr.replace("$__rate_interval", rate).replace("$camera", camera)
    assert "$" not in text, f"a template variable this test does not fill in: {expr}"
    return text


def _family(metric: str) -> str:
    return re.sub(r"_(bucket|sum|count|total)$", "", metric)


# --- fast: the generator, the queries' syntax and names, provisioning, alerts -----------------------------------


def test_generator_reproduces_the_committed_dashboard_byte_for_byte(generator: ModuleType) -> None:
    assert generator.render() == DASHBOARD.read_text(), (
        "deploy/grafana/frosted-dashboard.json is not what deploy/grafana/dashboard.py generates: edit the "
        "generator, then run `python deploy/grafana/dashboard.py`")
    assert json.loads(generator.render()) == committed()


def test_generator_check_flag_spots_a_stale_file(generator: ModuleType, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "frosted-dashboard.json"
    copy.write_text(DASHBOARD.read_text().replace("Frosted: edge and tail", "edited by hand", 1))
    assert generator.main(["--check", "--output", str(copy)]) == 1
    assert generator.main(["--output", str(copy)]) == 0
    assert generator.main(["--check", "--output", str(copy)]) == 0
    assert copy.read_text() == DASHBOARD.read_text()
    assert "stale" in capsys.readouterr().err


def test_dashboard_has_the_panels_operators_need() -> None:
    dashboard = committed()
    assert dashboard["uid"] == "frosted-overview" and dashboard["schemaVersion"] >= 41  # the Grafana 11 SDK
    titles = {t.panel for t in targets(dashboard)}
    assert titles >= {
        "Frames per second per camera", "Dropped frames per camera by reason", "Reconnects by link",
        "p50 per stage", "p99 per stage", "End-to-end p99 per camera", "Uplink bytes/s per camera",
        "Tail queue vs compute time", "Tail batch size per camera (edge side)", "Tail batch size (tail side)",
        "Open streams", "Refused streams by reason", "Triton requests per second by model",
        "Triton queue vs compute time per request", "Triton batch size by model",
        "Heads: runtime, device, precision, profile", "Served profiles"}
    ids = [p["id"] for p in dashboard["panels"]] + [c["id"] for p in dashboard["panels"] for c in p.get("panels", [])]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["camera"]["allValue"] == ".*" and variables["camera"]["multi"]


@needs_promtool
def test_every_panel_query_parses_and_names_metrics_that_exist(generator: ModuleType, tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule); frosted_* names and labels are the code's; nv_* names are
    Triton's, only in the Triton row; and every metric the code exposes is charted."""
    dashboard = committed()
    found = targets(dashboard)
    camera_query = next(v for v in dashboard["templating"]["list"] if v["name"] == "camera")["query"]["query"]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"frosted_dashboard:panel_{i}", "expr": substitute(t.expr, ".*", "1m")}
        for i, t in enumerate(found)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout

    check = checker()
    exposed = check.exposed_metrics()
    used = check.check_promql(camera_query, exposed, "$camera")
    for t in found:
        try:
            used |= check.check_promql(t.expr, exposed, t.name)
        except check.CheckFailedError as exc:
            pytest.fail(str(exc))
        triton = set(re.findall(r"\b(nv_[a-z_]+)\b", t.expr))
        assert triton <= generator.TRITON_METRICS, f"{t.name}: not a Triton metric: {triton}"
        assert bool(triton) == generator.needs_triton(t.expr) == (t.row == generator.TRITON_ROW), t
    uncharted = {_family(n) for n in exposed.names} - {_family(n) for n in used}
    assert not uncharted, f"metrics the code exposes and no panel charts: {sorted(uncharted)}"


def test_provisioning_loads_the_generated_file() -> None:
    """Grafana's file provider loads every JSON file in its folder: the generated one is the only one."""
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "frosted.yaml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert sorted(p.name for p in GRAFANA.glob("*.json")) == [DASHBOARD.name]
    readme = (REPO / "deploy" / "README.md").read_text()
    assert f"deploy/grafana/{DASHBOARD.name}:{providers[0]['options']['path']}/" in readme  # docker run mounts it


def test_datasource_rate_window_spans_every_scrape_job() -> None:
    """$__rate_interval is at least 4x the datasource's timeInterval: that must be the longest scrape interval,
    or rate() over the slower job (the tail) sees one sample per window and the panel flickers to no data."""
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "frosted-prometheus.yaml").read_text())
    [prometheus] = [d for d in datasource["datasources"] if d["type"] == "prometheus"]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())

    def seconds(duration: str) -> float:
        value, unit = re.fullmatch(r"(\d+)(ms|s|m)", duration).groups()  # type: ignore[union-attr]
        return int(value) * {"ms": 0.001, "s": 1, "m": 60}[unit]

    default = config["global"]["scrape_interval"]
    longest = max(seconds(job.get("scrape_interval", default)) for job in config["scrape_configs"])
    assert seconds(prometheus["jsonData"]["timeInterval"]) >= longest


@needs_promtool
def test_alert_rules_pass_their_promtool_tests_and_name_metrics_that_exist() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    check = checker()
    exposed = check.exposed_metrics()
    alerts = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            names = check.check_promql(rule["expr"], exposed, rule["alert"])
            assert names or rule["alert"] == "FrostedTargetDown", rule["alert"]  # only `up` is Prometheus's own


# --- slow: every query against a real Prometheus scraping a live agent and tail ----------------------------------

SCRAPE_SECONDS = 1
STEP_SECONDS = 1
WINDOW_SECONDS = 30  # each query_range looks this far back, the way a panel looks at its time range


class Prometheus:
    """A real Prometheus (Debian's) on 127.0.0.1, its HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str | list[str]) -> Any:
        url = f"{self.base}{path}?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query_range(self, promql: str) -> list[dict[str, Any]]:
        end = time.time()
        return self.get("/api/v1/query_range", query=promql, start=f"{end - WINDOW_SECONDS:.3f}",
                        end=f"{end:.3f}", step=f"{STEP_SECONDS}s")["result"]


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(v) for series in result for _, v in series["values"] if not math.isnan(float(v))]


def answers_to_every_query(prometheus: Prometheus, checked: list[Target], rate: str, live: Callable[[bool], bool],
                           what: str) -> dict[Target, list[dict[str, Any]]]:
    """Each target's query result once it returns a finite value (``live`` checks the servers are still up),
    within a deadline; on timeout the error names the queries that never answered."""
    answers: dict[Target, list[dict[str, Any]]] = {}

    def every_query_answered() -> bool:
        for target in checked:
            if target not in answers:
                result = prometheus.query_range(substitute(target.expr, "gate", rate))
                if finite_values(result):
                    answers[target] = result
        return live(len(answers) == len(checked))

    try:
        wait_until_sync(every_query_answered, what, timeout=120, poll=1.0)
    except AssertionError as exc:
        missing = [f"{t.name}: {substitute(t.expr, 'gate', rate)}" for t in checked if t not in answers]
        raise AssertionError(f"{exc}; no data from: {missing}") from None
    return answers


@contextlib.contextmanager
def stopped_at_exit(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow  # an RTSP camera, an agent, a tail and Prometheus in subprocesses: ~1 minute on 2 cores
@pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus not installed (apt-get install prometheus)")
def test_every_panel_query_returns_data_from_a_live_agent_and_tail(
        generator: ModuleType, gst_rtsp: None, weights_path: Path, tmp_path: Path) -> None:
    import grpc

    from edge_agent.metrics import STAGES
    from frosted_wire.v1 import tail_pb2_grpc
    from tests.rig.servers import RtspServer, free_port
    from tests.tail_helpers import PROFILE
    from tests.test_live import start_tail_process

    assert PROMETHEUS is not None
    dashboard = committed()
    everything = targets(dashboard)
    checked = [t for t in everything if not generator.needs_triton(t.expr)]
    skipped = [t for t in everything if generator.needs_triton(t.expr)]
    assert skipped and all(t.row == generator.TRITON_ROW for t in skipped)  # only the Triton row is exempt

    tail_port, tail_metrics, edge_metrics, prom_port = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [
            {"job_name": "frosted-edge", "static_configs": [{"targets": [f"127.0.0.1:{edge_metrics}"]}]},
            {"job_name": "frosted-tail", "static_configs": [{"targets": [f"127.0.0.1:{tail_metrics}"]}]}]}))
    rate = rate_interval(SCRAPE_SECONDS, STEP_SECONDS)
    with contextlib.ExitStack() as stack:
        camera = stack.enter_context(RtspServer(None, 640, 480, fps=10))  # a live camera: a moving ball
        # one stream at most, so the test can have a second one refused (the refused-streams panel)
        stack.enter_context(stopped_at_exit(start_tail_process(tail_port, "--metrics-port", str(tail_metrics),
                                                               "--max-streams", "1")))
        edge = stack.enter_context(stopped_at_exit(subprocess.Popen(
            [sys.executable, "-m", "frosted", "edge", "--source", camera.url, "--camera-id", "gate",
             "--tail", f"127.0.0.1:{tail_port}", "--insecure", "--noise", PROFILE, "--metrics-port",
             str(edge_metrics), "--json", str(tmp_path / "boxes.jsonl"), "--threads", "1"],
            cwd=REPO, stderr=subprocess.DEVNULL)))
        stack.enter_context(stopped_at_exit(subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        prometheus = Prometheus(prom_port)
        wait_until_sync(prometheus.ready, "Prometheus to be ready", poll=0.2)

        def live(condition: bool) -> bool:
            assert edge.poll() is None, f"the agent exited with {edge.returncode}"
            return condition

        # the camera variable's query, label_values(frosted_edge_frames_total, camera), as Grafana runs it
        wait_until_sync(lambda: live(prometheus.get("/api/v1/label/camera/values",
                                                    **{"match[]": "frosted_edge_frames_total"}) == ["gate"]),
                        "the camera variable to list the agent's camera", poll=0.5)
        wait_until_sync(lambda: live(bool(finite_values(prometheus.query_range("frosted_tail_streams == 1")))),
                        "the agent's stream to be open on the tail", poll=0.5)

        # a second stream over --max-streams: refused with RESOURCE_EXHAUSTED, counted by reason
        with grpc.insecure_channel(f"127.0.0.1:{tail_port}") as channel, pytest.raises(grpc.RpcError) as refused:
            list(tail_pb2_grpc.CloudTailStub(channel).Detect(iter(()), timeout=20))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        # and the camera drops: the agent's source reconnects (the reconnects panel)
        camera.restart()

        answers = answers_to_every_query(prometheus, checked, rate, live, "every panel query to return data")

        def panel(title: str) -> list[dict[str, Any]]:
            """The first query of the panel called ``title``, over the last WINDOW_SECONDS."""
            target = next(t for t in checked if t.panel == title)
            return prometheus.query_range(substitute(target.expr, "gate", rate))

        def series_max(title: str, label: str, value: str) -> float:
            return max([0.0] + [float(v) for s in panel(title) if s["metric"].get(label) == value
                                for _, v in s["values"] if not math.isnan(float(v))])

        wait_until_sync(lambda: live(series_max("Refused streams by reason", "reason", "max_streams") > 0),
                        "the refused stream on the refused-streams panel", poll=1.0)
        wait_until_sync(lambda: live(series_max("Reconnects by link", "link", "source") > 0),
                        "the camera's reconnect on the reconnects panel", poll=1.0)
        wait_until_sync(lambda: live({s["metric"]["stage"] for s in panel("p99 per stage")
                                      if finite_values([s])} >= set(STAGES)),
                        "a p99 for every stage", poll=1.0)
        fps = finite_values(panel("Frames per second per camera"))
        end_to_end = finite_values(panel("End-to-end p99 per camera"))
        streams = finite_values(panel("Open streams"))
        uplink = finite_values(panel("Uplink bytes/s per camera"))
        heads = [{k: v for k, v in s["metric"].items() if k != "instance"}
                 for s in panel("Heads: runtime, device, precision, profile")]
        served = [{k: v for k, v in s["metric"].items() if k != "instance"} for s in panel("Served profiles")]

    assert max(fps) > 0 and all(0 < v < math.inf for v in end_to_end)
    assert max(streams) == 1  # the refused one never counted
    assert max(uplink) > 0
    assert heads == [{"runtime": "torch", "device": "cpu", "precision": "float32", "profile": PROFILE}]
    assert [(t["profile"], t["head_precision"], t["runtime"], t["device"]) for t in served] == [
        (PROFILE, "float32", "torch", "cpu")]
    for target, result in answers.items():  # what each query first answered (pytest -s shows it)
        values = finite_values(result)
        print(f"{target.name}: {len(result)} series, last {values[-1]:.4g}")
    print(f"\n{len(checked)} queries of {len({t.panel for t in checked})} panels returned data "
          f"($camera=gate, $__rate_interval={rate}); {len(skipped)} Triton queries "
          "left to tests/test_dashboard_triton.py")
