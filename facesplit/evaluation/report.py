"""Score detections on an evaluation set fold by fold, combine the folds, and print TR-4928's results block.

Every figure of a run is computed from its folds' `FoldScore`s by `combine`: one process scoring all folds and
`frosted eval --merge` combining folds that other processes scored (facesplit.evaluation.folds) go through the
same code on the same numbers, so they agree to the last digit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from facesplit.evaluation.ap import PrecisionRecall, pooled, precision_recall
from facesplit.evaluation.coco import LabelledImage
from facesplit.evaluation.fddb import RocSteps, roc_from_steps, roc_steps
from facesplit.evaluation.sets import EvalSet

Detections = Mapping[str, np.ndarray]  # image key -> (N, 5) [x1, y1, x2, y2, score] in its pixels


@dataclass(frozen=True, eq=False)
class FoldScore:
    """One fold's figures and what pooling needs from it: its precision/recall curve at each IoU (every
    detection's score and whether it matched a face), and for FDDB its share of the ROC."""

    number: int  # 1-based, as reported
    name: str  # "<set>-fold-<number>"
    images: int
    faces: int
    curves: Mapping[str, PrecisionRecall]  # by str(IoU), in the run's IoU order
    roc: RocSteps | None = None  # FDDB only

    def entry(self, operating_threshold: float) -> dict:
        by_iou = {}
        for iou, curve in self.curves.items():
            recall, false_positives = curve.at_threshold(operating_threshold)
            by_iou[iou] = {"ap": curve.ap, "recall": recall, "false_positives": false_positives}
        return {"name": self.name, "images": self.images, "faces": self.faces, "by_iou": by_iou}


def score_folds(eval_set: EvalSet, detections: Detections, ious: Sequence[float]) -> list[FoldScore]:
    empty = np.zeros((0, 5), dtype=np.float32)

    def pairs(images: Sequence[LabelledImage]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(detections.get(i.key, empty), i.boxes) for i in images]

    folds = []
    for k, fold in enumerate(eval_set.folds):
        roc = None
        if eval_set.fddb_images:
            keys = {image.key for image in fold}
            roc = roc_steps({key: d for key, d in detections.items() if key in keys},
                            [image for image in eval_set.fddb_images if image.path in keys])
        folds.append(FoldScore(eval_set.fold_numbers[k], eval_set.fold_name(k), len(fold),
                               int(sum(len(i.boxes) for i in fold)),
                               {str(iou): precision_recall(pairs(fold), iou) for iou in ious}, roc))
    return folds


def combine(set_name: str, folds: Sequence[FoldScore], ious: Sequence[str], operating_threshold: float) -> dict:
    """Every figure of an evaluation as plain JSON-able data: per fold and pooled, per IoU threshold (given as
    the str() of each IoU, in the order to report them)."""
    entries = [fold.entry(operating_threshold) for fold in folds]
    summary: dict = {}
    for iou in ious:
        scored = [ap for ap in (e["by_iou"][iou]["ap"] for e in entries) if not math.isnan(ap)]
        curve = pooled([fold.curves[iou] for fold in folds])
        recall, false_positives = curve.at_threshold(operating_threshold)
        summary[iou] = {"mean_fold_ap": float(np.mean(scored)) if scored else float("nan"),
                        "pooled_ap": curve.ap, "recall": recall, "false_positives": false_positives}
    result: dict = {"set": set_name, "images": sum(fold.images for fold in folds),
                    "faces": sum(fold.faces for fold in folds), "operating_threshold": operating_threshold,
                    "folds": entries, "by_iou": summary}
    rocs = [fold.roc for fold in folds if fold.roc is not None]
    if rocs:
        roc = roc_from_steps(rocs)
        result["fddb_roc"] = {
            "discrete_tpr_at_1000_fp": roc.true_positive_rate_at(1000),
            "continuous_tpr_at_1000_fp": roc.true_positive_rate_at(1000, continuous=True),
            "discrete": roc.discrete.tolist(), "continuous": roc.continuous.tolist()}
    return result


def score_set(eval_set: EvalSet, detections: Detections, ious: Sequence[float],
              operating_threshold: float) -> dict:
    """`combine` of every fold of ``eval_set``."""
    return combine(eval_set.name, score_folds(eval_set, detections, ious), [str(iou) for iou in ious],
                   operating_threshold)


def results_block(scores: dict, iou: float | str) -> str:
    """TR-4928's block, verbatim in form: one line per fold, the mean of the folds' APs, then mAP."""
    name = scores["set"]
    lines = ["==================== Results ===================="]
    lines += [f"{fold['name']} Val AP: {fold['by_iou'][str(iou)]['ap']}" for fold in scores["folds"]]
    mean = scores["by_iou"][str(iou)]["mean_fold_ap"]
    lines += [f"{name} Dataset Average AP: {mean}", "=================================================",
              f"mAP: {mean}"]
    return "\n".join(lines)


def report_lines(scores: dict) -> list[str]:
    """What `frosted eval` prints for a run (one process or merged folds): per IoU its block and the pooled
    figures, then FDDB's ROC summary where there is one."""
    lines = []
    threshold = scores["operating_threshold"]
    for iou, summary in scores["by_iou"].items():
        lines += [f"IoU threshold: {iou}", results_block(scores, iou),
                  f"Pooled AP over all {scores['images']} images ({scores['faces']} faces): "
                  f"{summary['pooled_ap']:.4f}; at score >= {threshold}: recall {summary['recall']:.4f}, "
                  f"{summary['false_positives']} false positives"]
    if "fddb_roc" in scores:
        roc = scores["fddb_roc"]
        lines.append(f"FDDB ROC at 1000 false positives: discrete {roc['discrete_tpr_at_1000_fp']:.4f}, "
                     f"continuous {roc['continuous_tpr_at_1000_fp']:.4f}")
    return lines


def fold_report_lines(scores: dict, number: int, fold_count: int) -> list[str]:
    """What `frosted eval --fold N` prints: the fold's TR-4928 line per IoU and its figures at the threshold."""
    if not scores["folds"]:
        return [f"{scores['set']}-fold-{number} (of {fold_count}): every image was skipped, nothing to evaluate"]
    [fold] = scores["folds"]
    lines = []
    for iou, figures in fold["by_iou"].items():
        lines += [f"IoU threshold: {iou}", f"{fold['name']} Val AP: {figures['ap']}",
                  f"Fold {number} of {fold_count}: {fold['images']} images ({fold['faces']} faces); at score >= "
                  f"{scores['operating_threshold']}: recall {figures['recall']:.4f}, "
                  f"{figures['false_positives']} false positives"]
    return lines
