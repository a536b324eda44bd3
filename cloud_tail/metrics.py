"""The tail's Prometheus metrics, in their own registry (a demo process also holds the edge's)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facesplit.runtimes import runs_on

REGISTRY = CollectorRegistry()

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                    0.25, 0.5, 1.0, 2.5)

QUEUE_SECONDS = Histogram("frosted_tail_queue_seconds", "Time a frame waited for its batch to start",
                          buckets=_LATENCY_BUCKETS, registry=REGISTRY)
COMPUTE_SECONDS = Histogram("frosted_tail_compute_seconds", "Tail + post-processing time of one batch",
                            buckets=_LATENCY_BUCKETS, registry=REGISTRY)
BATCH_SIZE = Histogram("frosted_tail_batch_size", "Frames per tail batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
                       registry=REGISTRY)
FRAMES = Counter("frosted_tail_frames_total", "Activation frames received, by outcome", ["outcome"],
                 registry=REGISTRY)
for _outcome in ("accepted", "invalid", "unknown_profile"):
    FRAMES.labels(_outcome)  # zero series from the start, for rates and alerts
RECEIVED_BYTES = Counter("frosted_tail_received_bytes_total", "Activation payload bytes accepted",
                         registry=REGISTRY)
STREAMS = Gauge("frosted_tail_streams", "Detect streams open now", registry=REGISTRY)
STREAMS_REFUSED = Counter("frosted_tail_streams_refused_total",
                          "Detect streams refused (over a cap) or closed (idle) by the tail's limits, by reason",
                          ["reason"], registry=REGISTRY)
for _reason in ("max_streams", "max_streams_per_connection", "max_streams_per_client", "idle", "watches"):
    STREAMS_REFUSED.labels(_reason)
CONNECTIONS = Gauge("frosted_tail_connections", "Client TCP connections open now (the tail's gate relays each to gRPC)",
                    registry=REGISTRY)
CONNECTIONS_REFUSED = Counter("frosted_tail_connections_refused_total",
                              "Client TCP connections closed at once by the gate, over a cap, by reason",
                              ["reason"], registry=REGISTRY)
for _reason in ("max_connections", "max_connections_per_client"):
    CONNECTIONS_REFUSED.labels(_reason)
ASYNCIO_TASKS = Gauge("frosted_tail_asyncio_tasks",
                      "asyncio tasks alive on the tail's event loop: flat in a healthy tail, a leak grows it",
                      registry=REGISTRY)
QUEUED_FRAMES = Gauge("frosted_tail_queued_frames",
                      "Frames waiting for a batch now (of open streams: an ended stream's are dropped)",
                      registry=REGISTRY)
SERVED = Gauge("frosted_tail_served_info",
               "1 per tail served, labelled with its profile (clean: none), the precision of the heads it takes "
               "frames from, the split, and the runtime and device it runs on",
               ["profile", "head_precision", "split", "runtime", "device"], registry=REGISTRY)


def declare_served(served: Iterable[tuple[str, str, str]], runtime: str, device: str) -> None:
    """Say what the tail serves: one SERVED series per (profile, head precision, split), replacing earlier ones."""
    SERVED.clear()
    for profile, head_precision, split in served:
        SERVED.labels(profile, head_precision, split, runtime, runs_on(runtime, device)).set(1)


def count_tasks_of(loop: asyncio.AbstractEventLoop) -> None:
    """Make ASYNCIO_TASKS report ``loop``'s live tasks at each scrape. The scrape runs on the metrics server's
    thread; `asyncio.all_tasks` copes with that (it retries its copy of the task set if the loop changes it)."""
    ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
