"""Score detections on an evaluation set and print TR-4928's results block."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from facesplit.evaluation.ap import precision_recall
from facesplit.evaluation.coco import LabelledImage
from facesplit.evaluation.fddb import fddb_roc
from facesplit.evaluation.sets import EvalSet

Detections = Mapping[str, np.ndarray]  # image key -> (N, 5) [x1, y1, x2, y2, score] in its pixels


def score_set(eval_set: EvalSet, detections: Detections, ious: Sequence[float],
              operating_threshold: float) -> dict:
    """Every figure of an evaluation as plain JSON-able data: per fold and pooled, per IoU threshold."""
    empty = np.zeros((0, 5), dtype=np.float32)

    def pairs(images: Sequence[LabelledImage]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(detections.get(i.key, empty), i.boxes) for i in images]

    folds = []
    for k, fold in enumerate(eval_set.folds):
        entry: dict = {"name": eval_set.fold_name(k), "images": len(fold),
                       "faces": int(sum(len(i.boxes) for i in fold)), "by_iou": {}}
        for iou in ious:
            curve = precision_recall(pairs(fold), iou)
            recall, false_positives = curve.at_threshold(operating_threshold)
            entry["by_iou"][str(iou)] = {"ap": curve.ap, "recall": recall, "false_positives": false_positives}
        folds.append(entry)
    summary: dict = {}
    for iou in ious:
        fold_aps = [f["by_iou"][str(iou)]["ap"] for f in folds]
        scored = [ap for ap in fold_aps if not math.isnan(ap)]
        pooled = precision_recall(pairs(eval_set.images), iou)
        recall, false_positives = pooled.at_threshold(operating_threshold)
        summary[str(iou)] = {"mean_fold_ap": float(np.mean(scored)) if scored else float("nan"),
                             "pooled_ap": pooled.ap, "recall": recall, "false_positives": false_positives}
    result: dict = {"set": eval_set.name, "images": len(eval_set.images),
                    "faces": int(sum(f["faces"] for f in folds)), "operating_threshold": operating_threshold,
                    "folds": folds, "by_iou": summary}
    if eval_set.fddb_images:
        keys = {image.path for image in eval_set.fddb_images}
        roc = fddb_roc({k: v for k, v in detections.items() if k in keys}, eval_set.fddb_images)
        result["fddb_roc"] = {
            "discrete_tpr_at_1000_fp": roc.true_positive_rate_at(1000),
            "continuous_tpr_at_1000_fp": roc.true_positive_rate_at(1000, continuous=True),
            "discrete": roc.discrete.tolist(), "continuous": roc.continuous.tolist()}
    return result


def results_block(scores: dict, iou: float) -> str:
    """TR-4928's block, verbatim in form: one line per fold, the mean of the folds' APs, then mAP."""
    name = scores["set"]
    lines = ["==================== Results ===================="]
    lines += [f"{fold['name']} Val AP: {fold['by_iou'][str(iou)]['ap']}" for fold in scores["folds"]]
    mean = scores["by_iou"][str(iou)]["mean_fold_ap"]
    lines += [f"{name} Dataset Average AP: {mean}", "=================================================",
              f"mAP: {mean}"]
    return "\n".join(lines)
