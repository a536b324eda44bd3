"""Tail outputs -> face boxes: decode against the priors, score threshold, top-k, NMS, keep-k."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facesplit.priors import decode_boxes, priors_for


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.01  # candidates below this never reach NMS
    nms_iou: float = 0.3
    pre_nms_top_k: int = 5000
    keep_top_k: int = 750


def detections_from_outputs(loc: np.ndarray, scores: np.ndarray, input_height: int, input_width: int,
                            config: PostprocessConfig = PostprocessConfig()) -> np.ndarray:
    """One image's (P, 4) offsets and (P,) face scores -> (N, 5) [x1, y1, x2, y2, score] in input pixels,
    best first."""
    keep = np.flatnonzero(scores > config.score_threshold)
    if keep.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    priors = priors_for(input_height, input_width)
    boxes = decode_boxes(loc[keep], priors[keep]) * np.array(
        [input_width, input_height, input_width, input_height], dtype=np.float32)
    kept_scores = scores[keep]
    # OpenCV's NMS takes (x, y, w, h); its top_k cuts the candidates *before* suppression, and it
    # returns the survivors' indices by descending score.
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    chosen = cv2.dnn.NMSBoxes(xywh, kept_scores.astype(np.float64), config.score_threshold, config.nms_iou,
                              top_k=config.pre_nms_top_k)
    chosen = np.asarray(chosen, dtype=np.int64).reshape(-1)[:config.keep_top_k]
    return np.concatenate([boxes[chosen], kept_scores[chosen, None]], axis=1).astype(np.float32)
