"""The end-of-run summary: per-stage percentiles over all cameras, and each camera's frames."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edge_agent import metrics
from edge_agent.camera import CameraPipeline


@dataclass
class StageSummary:
    count: int
    p50_ms: float
    p99_ms: float


@dataclass
class RunSummary:
    answered: dict[str, int] = field(default_factory=dict)  # camera -> frames answered
    dropped: dict[str, int] = field(default_factory=dict)  # camera -> frames replaced by newer ones
    stages: dict[str, StageSummary] = field(default_factory=dict)  # over all cameras
    lost: dict[str, int] = field(default_factory=dict)  # camera -> frames sent but never answered

    def table(self) -> str:
        lines = [f"{'stage':<18} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8}"]
        lines += [f"{name:<18} {s.count:>7} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f}" for name, s in self.stages.items()]
        for camera, answered in self.answered.items():
            lines.append(f"camera {camera}: {answered} frames answered, {self.dropped.get(camera, 0)} dropped "
                         f"(keep-latest), {self.lost.get(camera, 0)} lost in the uplink")
        return "\n".join(lines)


def summarise(pipelines: Iterable[CameraPipeline]) -> RunSummary:
    summary = RunSummary()
    pooled: dict[str, list[float]] = {}
    for pipeline in pipelines:
        summary.answered[pipeline.camera_id] = pipeline.answered
        summary.dropped[pipeline.camera_id] = pipeline.dropped
        summary.lost[pipeline.camera_id] = pipeline.lost
        for stage, values in pipeline.samples.items():
            pooled.setdefault(stage, []).extend(values)
    for stage in metrics.STAGES:
        values = pooled.get(stage)
        if values:
            ms = np.asarray(values) * 1000
            summary.stages[stage] = StageSummary(len(values), float(np.percentile(ms, 50)),
                                                 float(np.percentile(ms, 99)))
    return summary
