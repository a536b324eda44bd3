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
    unanswered: dict[str, str] = field(default_factory=dict)  # camera that had no answer -> why, in words

    def table(self) -> str:
        lines = [f"{'stage':<18} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8}"]
        lines += [f"{name:<18} {s.count:>7} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f}" for name, s in self.stages.items()]
        for camera, answered in self.answered.items():
            lines.append(f"camera {camera}: {answered} frames answered, {self.dropped.get(camera, 0)} dropped "
                         f"(keep-latest), {self.lost.get(camera, 0)} lost in the uplink")
        return "\n".join(lines)


def why_unanswered(pipeline: CameraPipeline, tail_problem: str | None) -> str:
    """Why ``pipeline`` had no frame answered: its source, the tail check (``tail_problem``: why the tail had
    not passed it, None once it had) or the uplink."""
    read = pipeline.sequence + pipeline.dropped + int(pipeline.slot.pending)
    reasons = [] if read else ["its source gave no frame"]
    if tail_problem is not None:
        reasons.append(tail_problem)
    elif pipeline.sequence:
        reasons.append(f"{pipeline.sequence} sent, {pipeline.lost} lost in the uplink"
                       + (f" (last: {pipeline.stream.last_error})" if pipeline.stream.last_error else ""))
    elif read:
        reasons.append(f"{read} read, none sent: the uplink never had room"
                       + (f" (last: {pipeline.stream.last_error})" if pipeline.stream.last_error else ""))
    return "; ".join(reasons)


def summarise(pipelines: Iterable[CameraPipeline], tail_problem: str | None = None) -> RunSummary:
    """The run's summary; ``tail_problem`` says why the tail had not passed the agent's check (None: it had)."""
    summary = RunSummary()
    pooled: dict[str, list[float]] = {}
    for pipeline in pipelines:
        summary.answered[pipeline.camera_id] = pipeline.answered
        if not pipeline.answered:
            summary.unanswered[pipeline.camera_id] = why_unanswered(pipeline, tail_problem)
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
