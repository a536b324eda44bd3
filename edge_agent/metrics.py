"""The agent's Prometheus metrics, per camera, in their own registry (a demo process also holds the tail's)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facesplit.runtimes import runs_on

REGISTRY = CollectorRegistry()

STAGES = ("decode", "preprocess", "head", "noise", "encode", "uplink_round_trip", "tail_queue", "tail_compute",
          "end_to_end")

STAGE_SECONDS = Histogram(
    "frosted_edge_stage_seconds", "Per-frame time of each stage; end_to_end is capture to boxes",
    ["camera", "stage"], registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1,
             0.15, 0.25, 0.5, 1.0, 2.5))
FRAMES = Counter("frosted_edge_frames_total", "Frames answered with boxes (fps = rate of this)", ["camera"],
                 registry=REGISTRY)
DROPPED = Counter("frosted_edge_frames_dropped_total",
                  "Frames dropped: replaced by a newer one before processing (keep-latest), or lost in a broken "
                  "uplink", ["camera", "reason"], registry=REGISTRY)
RECONNECTS = Counter("frosted_edge_reconnects_total", "Reconnections, by link", ["camera", "link"],
                     registry=REGISTRY)
SENT_BYTES = Counter("frosted_edge_uplink_bytes_total", "Activation payload bytes sent", ["camera"],
                     registry=REGISTRY)
TAIL_BATCH = Histogram("frosted_edge_tail_batch_size", "Size of the tail batch each frame was computed in",
                       ["camera"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=REGISTRY)
ASYNCIO_TASKS = Gauge("frosted_edge_asyncio_tasks",
                      "asyncio tasks alive on the agent's event loop: flat in a healthy agent, a leak grows it",
                      registry=REGISTRY)
HEAD = Gauge("frosted_edge_head_info",
             "1, labelled with what runs this agent's head (runtime, device, precision) and the noise profile it "
             "sends (clean: none)", ["runtime", "device", "precision", "profile"], registry=REGISTRY)


def declare_head(runtime: str, device: str, precision: str, profile: str) -> None:
    """Say what runs the head: one HEAD series, replacing any earlier one (a process runs one agent)."""
    HEAD.clear()
    HEAD.labels(runtime, runs_on(runtime, device), precision, profile).set(1)


def count_tasks_of(loop: asyncio.AbstractEventLoop) -> None:
    """Make ASYNCIO_TASKS report ``loop``'s live tasks at each scrape. The scrape runs on the metrics server's
    thread; `asyncio.all_tasks` copes with that (it retries its copy of the task set if the loop changes it)."""
    ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))


def declare_camera(camera: str) -> None:
    """Create a camera's series at zero, so rates and "no frames" alerts work before the first event."""
    FRAMES.labels(camera)
    SENT_BYTES.labels(camera)
    for reason in ("keep_latest", "uplink"):
        DROPPED.labels(camera, reason)
    for link in ("source", "uplink"):
        RECONNECTS.labels(camera, link)
