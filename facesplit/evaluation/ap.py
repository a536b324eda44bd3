"""VOC-style average precision: greedy matching by score within an image, all-point interpolation,
pooled over the images of a set (or fold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (N, 4+) and (M, 4+) boxes given as x1, y1, x2, y2."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(detections: np.ndarray, truth: np.ndarray, iou_threshold: float) -> np.ndarray:
    """True-positive flags for (N, 5) detections against (M, 4) faces, in the detections' own order.

    VOC rule: take detections by descending score; each one claims the face it overlaps most; it is a
    true positive if that overlap reaches the threshold and no better-scored detection claimed the face.
    """
    hits = np.zeros(len(detections), dtype=bool)
    if len(detections) == 0 or len(truth) == 0:
        return hits
    overlaps = iou_matrix(detections, truth)
    best = overlaps.argmax(axis=1)
    claimed = np.zeros(len(truth), dtype=bool)
    for i in np.argsort(-detections[:, 4], kind="stable"):
        face = best[i]
        if overlaps[i, face] >= iou_threshold and not claimed[face]:
            claimed[face] = hits[i] = True
    return hits


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC 2010+ 'all points' interpolation)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass(frozen=True)
class PrecisionRecall:
    """Pooled precision/recall of a set of images at one IoU threshold; ``ap`` is NaN without faces."""

    ap: float
    faces: int
    scores: np.ndarray  # detections' scores, descending
    hits: np.ndarray  # true-positive flags in the same order

    def at_threshold(self, score_threshold: float) -> tuple[float, int]:
        """(recall, false positives) counting only detections scoring at least ``score_threshold``."""
        kept = self.scores >= score_threshold
        tp = int(self.hits[kept].sum())
        return (tp / self.faces if self.faces else float("nan")), int(kept.sum()) - tp


def precision_recall(pairs: Sequence[tuple[np.ndarray, np.ndarray]], iou_threshold: float) -> PrecisionRecall:
    """Pool (detections (N, 5), faces (M, 4)) pairs of many images into one precision/recall curve."""
    faces = sum(len(truth) for _, truth in pairs)
    scores = np.concatenate([d[:, 4] for d, _ in pairs] or [np.zeros(0)]).astype(np.float64)
    hits = np.concatenate([match_image(d, t, iou_threshold) for d, t in pairs] or [np.zeros(0, bool)])
    return curve_of(scores, hits, faces)


def pooled(curves: Sequence[PrecisionRecall]) -> PrecisionRecall:
    """Several folds' curves as one, bit for bit the curve of all their images pooled in that order: the
    stable sort keeps tied scores in fold order, and within a fold in the order its own sort left them."""
    scores = np.concatenate([c.scores for c in curves] or [np.zeros(0)]).astype(np.float64)
    hits = np.concatenate([c.hits for c in curves] or [np.zeros(0, bool)]).astype(bool)
    return curve_of(scores, hits, sum(c.faces for c in curves))


def curve_of(scores: np.ndarray, hits: np.ndarray, faces: int) -> PrecisionRecall:
    """The curve of detections' scores and true-positive flags (any order) against ``faces`` faces."""
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    if faces == 0:
        return PrecisionRecall(float("nan"), 0, scores, hits)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return PrecisionRecall(all_point_ap(tp / faces, precision), faces, scores, hits)
