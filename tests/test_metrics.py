"""Prometheus: a real Prometheus server scrapes the agent's and the tail's /metrics during a run, and a PromQL
p99-per-stage query returns numbers."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from edge_agent.metrics import STAGES
from frosted.demo import make_clip
from tests.conftest import REPO
from tests.rig.servers import free_port
from tests.test_live import start_tail_process

PROMETHEUS = shutil.which("prometheus")
DEADLINE_SECONDS = 120


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


@pytest.mark.slow  # agent, tail and Prometheus in subprocesses
@pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus not installed (apt-get install prometheus; .ci/run does)")
def test_prometheus_scrapes_both_sides_and_p99_per_stage_answers(tmp_path, weights_path):
    # the clip outlasts the deadline: a loaded machine can start the agent late, and a clip that ends first
    # takes the edge's /metrics with it before every stage has been scraped
    clip = make_clip(tmp_path / "clip.mp4", seconds=DEADLINE_SECONDS, fps=10, size=(640, 360))
    tail_port, tail_metrics, edge_metrics, prom_port = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: frosted-edge
    static_configs: [{{targets: ['127.0.0.1:{edge_metrics}']}}]
  - job_name: frosted-tail
    static_configs: [{{targets: ['127.0.0.1:{tail_metrics}']}}]
""")
    tail = start_tail_process(tail_port, "--metrics-port", str(tail_metrics))
    edge = subprocess.Popen([sys.executable, "-m", "frosted", "edge", "--source", str(clip), "--camera-id", "gate",
                             "--tail", f"127.0.0.1:{tail_port}", "--insecure", "--noise", "alpha-0.2",
                             "--metrics-port", str(edge_metrics), "--json", str(tmp_path / "boxes.jsonl"),
                             "--threads", "1"], cwd=REPO, stderr=subprocess.DEVNULL)
    prometheus = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p99_by_stage = ("histogram_quantile(0.99, sum by (le, stage) "
                    "(rate(frosted_edge_stage_seconds_bucket{camera='gate'}[10s])))")
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        stages: dict[str, float] = {}
        tail_p99: list[dict] = []
        while time.monotonic() < deadline and edge.poll() is None:
            time.sleep(2)
            try:
                stages = {r["metric"]["stage"]: float(r["value"][1]) for r in query(prom_port, p99_by_stage)}
                tail_p99 = query(prom_port, "histogram_quantile(0.99, sum by (le) "
                                            "(rate(frosted_tail_compute_seconds_bucket[10s])))")
            except OSError:
                continue  # Prometheus still starting
            if set(STAGES) <= set(stages) and all(v == v for v in stages.values()) and tail_p99:
                break
        edge_text, tail_text = scrape(edge_metrics), scrape(tail_metrics)
    finally:
        for process in (prometheus, edge):
            process.terminate()
        tail.terminate()
        for process in (prometheus, edge, tail):
            process.wait(timeout=30)
    assert set(STAGES) <= set(stages), f"stages with a p99: {sorted(stages)}"
    assert all(0 < v < math.inf for v in stages.values()), stages  # NaN, zero or negative would fail here
    assert stages["end_to_end"] >= stages["head"]
    assert float(tail_p99[0]["value"][1]) > 0
    for name in ("frosted_edge_frames_total", "frosted_edge_frames_dropped_total", "frosted_edge_reconnects_total",
                 "frosted_edge_uplink_bytes_total", "frosted_edge_tail_batch_size_bucket"):
        assert f'{name}{{camera="gate"' in edge_text, name
    for name in ("frosted_tail_queue_seconds_bucket", "frosted_tail_compute_seconds_bucket",
                 "frosted_tail_batch_size_bucket", 'frosted_tail_frames_total{outcome="accepted"}'):
        assert name in tail_text, name
    assert Path(tmp_path / "boxes.jsonl").read_text().count("\n") > 20
    # what runs the head, and what the tail serves: the dashboard's two tables
    assert info(edge_text, "frosted_edge_head_info") == [
        {"runtime": "torch", "device": "cpu", "precision": "float32", "profile": "alpha-0.2"}]
    assert info(tail_text, "frosted_tail_served_info") == [
        {"profile": "alpha-0.2", "head_precision": "float32", "split": "rdcl", "runtime": "torch", "device": "cpu"}]


def info(text: str, family: str) -> list[dict[str, str]]:
    """The label sets of ``family``'s samples in a /metrics page, each of value 1 (an _info gauge)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for f in text_string_to_metric_families(text) if f.name == family for s in f.samples]
    assert all(s.value == 1 for s in samples), samples
    return [s.labels for s in samples]


def test_the_info_series_say_what_runs_now_and_nothing_earlier():
    """One head series per agent process and one per tail served, each replaced (not added to) when declared
    again; TensorRT's device is the GPU whatever --device said."""
    from prometheus_client import generate_latest

    from cloud_tail import metrics as tail_metrics
    from edge_agent import metrics as edge_metrics

    edge_metrics.declare_head("torch", "cpu", "float32", "clean")
    edge_metrics.declare_head("tensorrt", "cpu", "int8", "inception3-rank16-alpha-0.4")
    assert info(generate_latest(edge_metrics.REGISTRY).decode(), "frosted_edge_head_info") == [
        {"runtime": "tensorrt", "device": "cuda", "precision": "int8", "profile": "inception3-rank16-alpha-0.4"}]
    tail_metrics.declare_served([("alpha-0.2", "float32", "rdcl")], "onnxruntime", "cpu")
    tail_metrics.declare_served([("alpha-0.2", "float32", "rdcl"), ("alpha-0.2", "int8", "rdcl")], "torch", "cuda")
    assert info(generate_latest(tail_metrics.REGISTRY).decode(), "frosted_tail_served_info") == [
        {"profile": "alpha-0.2", "head_precision": precision, "split": "rdcl", "runtime": "torch", "device": "cuda"}
        for precision in ("float32", "int8")]
