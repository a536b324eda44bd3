"""Task losses for fitting noise: MultiBox against labelled faces, or distillation from the clean model.

Both are the FaceBoxes training loss in shape: a face/background term on the positive anchors plus the
hardest negatives (7 per positive, so background cannot drown the faces), and smooth-L1 box regression on
the positives, normalised by the number of positives. MultiBox targets are 0/1 labels and encoded boxes;
distillation targets are the clean model's own probabilities and box offsets, so no labels are needed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from facesplit.evaluation.ap import iou_matrix
from facesplit.priors import encode_boxes

NEGATIVES_PER_POSITIVE = 7
MIN_NEGATIVES = 32  # images without faces still teach the background
MATCH_IOU = 0.35  # FaceBoxes' anchor matching threshold


def multibox_targets(boxes: np.ndarray, priors: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor face label (P,) and box offsets (P, 4) for (M, 4) faces in input pixels."""
    labels = np.zeros(len(priors), dtype=np.float32)
    offsets = np.zeros((len(priors), 4), dtype=np.float32)
    if len(boxes) == 0:
        return labels, offsets
    corners = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], axis=1)
    scaled = boxes / np.array([width, height, width, height], dtype=np.float32)
    overlaps = iou_matrix(corners, scaled)  # (P, M)
    best_face = overlaps.argmax(axis=1)
    best_overlap = overlaps.max(axis=1)
    best_face[overlaps.argmax(axis=0)] = np.arange(len(boxes))  # every face keeps its best anchor
    best_overlap[overlaps.argmax(axis=0)] = 1.0
    positive = best_overlap >= MATCH_IOU
    labels[positive] = 1.0
    offsets[positive] = encode_boxes(scaled[best_face[positive]], priors[positive])
    return labels, offsets


def detection_loss(loc: torch.Tensor, logits: torch.Tensor, target_prob: torch.Tensor,
                   target_loc: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-image loss. loc (N, P, 4), logits (N, P, 2); targets (N, P), (N, P, 4).

    Positives are anchors whose target face probability exceeds 0.5.
    """
    face_logit = logits[..., 1] - logits[..., 0]
    per_anchor = F.binary_cross_entropy_with_logits(face_logit, target_prob, reduction="none")
    positive = target_prob > 0.5
    total = loc.new_zeros(())
    for i in range(loc.shape[0]):
        pos = positive[i]
        n_pos = int(pos.sum())
        negatives = per_anchor[i][~pos]
        k = min(len(negatives), max(NEGATIVES_PER_POSITIVE * n_pos, MIN_NEGATIVES))
        hard = negatives.topk(k).values.sum()
        box = F.smooth_l1_loss(loc[i][pos], target_loc[i][pos], reduction="sum") if n_pos else 0.0
        total = total + (per_anchor[i][pos].sum() + hard + box) / max(n_pos, 1)
    return total / loc.shape[0]
