"""The dashboard's Triton row, proven on real data: `frosted export triton` writes the model repository, a REAL
tritonserver (tests/rig/triton.py, started with the metrics flags of the k8s Deployment) serves it, an edge agent
streams a live RTSP camera to it through ``triton://``, and a real Prometheus scrapes Triton's metrics port:
every query of the Triton row returns data, as Grafana would run it (tests/test_dashboard.py runs the other rows'
against our own tail).

Which of Triton's metrics must be charted: every ``nv_inference_*`` family the live server exports (the per-model
counters, gauge and summaries that describe how it serves the tail), and the row names no other, so a Triton
upgrade that renames one fails here. Its host and device gauges (``nv_cpu_*``, ``nv_pinned_memory_*``, and
``nv_gpu_*`` / ``nv_energy_*`` on a GPU) describe the machine, not the tail, and are left to the node's and
DCGM's dashboards."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import REPO, invoke_frosted
from tests.tail_helpers import PROFILE
from tests.test_dashboard import (
    GENERATOR,
    PROMETHEUS,
    SCRAPE_SECONDS,
    STEP_SECONDS,
    Prometheus,
    Target,
    answers_to_every_query,
    committed,
    finite_values,
    load_script,
    rate_interval,
    stopped_at_exit,
    substitute,
    targets,
)
from tests.waiting import wait_until_sync

TRITON_OVERLAY = REPO / "deploy" / "k8s" / "live" / "overlays" / "triton"
ADAPTER_RULES = REPO / "deploy" / "k8s" / "live" / "prometheus-adapter" / "rules.yaml"
STEPS = (f"{PROFILE}.tail-python", f"{PROFILE}.boxes")  # the ensemble's steps: python-backend models here


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    pytest.importorskip("grafana_foundation_sdk", reason="the dev extra's grafana-foundation-sdk (Grafana 11 build)")
    return load_script(GENERATOR, "frosted_grafana_dashboard")


def triton_targets(generator: ModuleType) -> list[Target]:
    return [t for t in targets(committed()) if t.row == generator.TRITON_ROW]


def deployment_args() -> list[str]:
    deployment = yaml.safe_load((TRITON_OVERLAY / "triton-deployment.yaml").read_text())
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
    return container["args"]


def family(name: str) -> str:
    """A series name's metric family: a summary's _count and _sum are its own (nv_inference_count is not)."""
    return re.sub(r"(_summary_us)_(count|sum)$", r"\1", name)


def test_the_hpa_line_and_the_adapter_read_what_the_panel_shows(generator: ModuleType) -> None:
    """The p95 panel draws the HPA's target, and shows the quantile of the summary the adapter's rule reads."""
    hpa = yaml.safe_load((TRITON_OVERLAY / "triton-hpa.yaml").read_text())
    [metric] = hpa["spec"]["metrics"]
    target = metric["pods"]["target"]["averageValue"]
    assert target.endswith("m") and int(target[:-1]) / 1000 == generator.TRITON_QUEUE_P95_TARGET_SECONDS
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    [rule] = [r for r in rules if r["name"]["as"] == metric["pods"]["metric"]["name"]]
    assert 'quantile="0.95"' in rule["metricsQuery"] and rule["metricsQuery"].rstrip().endswith("/ 1e6")
    [panel] = [t for t in triton_targets(generator) if "HPA" in t.panel]
    assert 'nv_inference_queue_summary_us{quantile="0.95"}' in panel.expr and panel.expr.endswith("/ 1e6")
    assert "--metrics-config=summary_latencies=true" in deployment_args()  # else the summary is not exported


@pytest.mark.slow  # an export, a tritonserver, an RTSP camera, an agent and Prometheus: ~1 minute on 2 cores
@pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus not installed (apt-get install prometheus)")
def test_every_triton_panel_query_returns_data_from_a_live_triton(
        generator: ModuleType, gst_rtsp: None, weights_path: Path, tmp_path: Path) -> None:
    from tests.rig.servers import RigUnavailableError, RtspServer, free_port
    from tests.rig.triton import TritonServer

    assert PROMETHEUS is not None
    checked = triton_targets(generator)
    assert checked and all(generator.needs_triton(t.expr) for t in checked)
    repository = tmp_path / "models"
    export = invoke_frosted("export", "triton", "--noise", PROFILE, "--threads", "1", "--weights", str(weights_path),
                            "--out", str(repository))
    assert export.returncode == 0, export.stderr[-2000:]
    try:
        triton = TritonServer(repository, models=[PROFILE])
    except RigUnavailableError as exc:
        pytest.skip(str(exc))
    # the rig serves metrics as the k8s Deployment does (the summaries the p50/p95/p99 panels and the HPA read)
    metrics_flags = {a for a in deployment_args() if a.startswith("--metrics-config")}
    assert metrics_flags and metrics_flags <= set(triton.command())

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [{"job_name": "frosted-triton",
                            "static_configs": [{"targets": [f"127.0.0.1:{triton.metrics_port}"]}]}]}))
    rate = rate_interval(SCRAPE_SECONDS, STEP_SECONDS)
    with contextlib.ExitStack() as stack:
        stack.enter_context(triton)  # started once, closed (stopped, its folder removed) at the end
        camera = stack.enter_context(RtspServer(None, 640, 480, fps=10))  # a live camera: a moving ball
        edge = stack.enter_context(stopped_at_exit(subprocess.Popen(
            [sys.executable, "-m", "frosted", "edge", "--source", camera.url, "--camera-id", "gate",
             "--tail", f"triton://{triton.grpc_address}", "--insecure", "--noise", PROFILE,
             "--json", str(tmp_path / "boxes.jsonl"), "--threads", "1"],
            cwd=REPO, stderr=subprocess.DEVNULL)))
        stack.enter_context(stopped_at_exit(subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        prometheus = Prometheus(prom_port)
        wait_until_sync(prometheus.ready, "Prometheus to be ready", poll=0.2)

        def live(condition: bool) -> bool:
            assert edge.poll() is None, f"the agent exited with {edge.returncode}"
            assert triton.process is not None and triton.process.poll() is None, triton.log_tail()
            return condition

        answers = answers_to_every_query(prometheus, checked, rate, live, "every Triton panel query to return data")

        def panel(title: str, ref: str = "A") -> dict[str, list[float]]:
            """One query of the panel called ``title`` over the last window: its finite values per series."""
            target = next(t for t in checked if t.panel == title and t.ref == ref)
            result = prometheus.query_range(substitute(target.expr, "gate", rate))
            return {"/".join(s["metric"].values()): finite_values([s]) for s in result if finite_values([s])}

        # what the agent's frames did in Triton, as the panels show it
        wait_until_sync(lambda: live(set(panel("Triton requests per second by model")) >= {PROFILE, *STEPS}),
                        "requests to the ensemble and both its steps", poll=1.0)
        served = panel("Triton requests per second by model")
        batches = panel("Triton batch size by model")
        p95 = panel("Triton queue p95 per replica (the HPA's metric)")
        failed = panel("Triton requests per second by model", "B")

        # every nv_inference_* family the live server exports is in the row, and the row reads no other
        exported = {family(n) for n in prometheus.get("/api/v1/label/__name__/values",
                                                      **{"match[]": '{job="frosted-triton"}'})}
        with urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10) as reply:
            exposition = reply.read().decode()

    inference = {n for n in exported if n.startswith("nv_inference_")}
    assert inference == generator.TRITON_METRICS, (sorted(inference ^ generator.TRITON_METRICS), exposition[:2000])
    charted = {name for t in checked for name in re.findall(r"\b(nv_inference_[a-z_]+)\b", t.expr)}
    assert charted == generator.TRITON_METRICS
    assert all(max(values) > 0 for values in served.values()), served
    assert set(batches[PROFILE]) == {1.0}, batches  # an ensemble runs each request as it comes
    assert all(values and min(values) >= 1 for values in batches.values()), batches
    assert all(0 < v < 10 for values in p95.values() for v in values), p95
    assert all(v == 0 for values in failed.values() for v in values), failed
    for target, result in answers.items():  # what each query first answered (pytest -s shows it)
        values = finite_values(result)
        print(f"{target.name}: {len(result)} series, last {values[-1]:.4g}")
    print(f"\n{len(checked)} Triton queries of {len({t.panel for t in checked})} panels returned data "
          f"(tritonserver 2.51, $__rate_interval={rate}); mean batch sizes {({m: max(v) for m, v in batches.items()})}")
