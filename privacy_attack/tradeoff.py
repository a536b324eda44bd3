"""What a profile costs and what it buys, side by side: AP on photos no compared profile was fitted on, and
the strongest attack's face SSIM and re-identification rate; a plot of one against the other across alpha.

`frosted attack` and bench/privacy_table.py both use it, so the verb's plot and the bench's table agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from facesplit.detector import SplitDetector, with_tail
from facesplit.evaluation.ap import precision_recall
from facesplit.evaluation.detections import detect_images
from facesplit.evaluation.sets import EvalSet, coco_set
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.sampler import GaussianStream

# The sets and IoU thresholds of the project's accuracy figures: MIT+CMU's boxes are loose head boxes (0.3),
# dlib's are tight hand-drawn face boxes (0.5); see REFERENCE.md.
ACCURACY_SETS = (("mitcmu", 0.3), ("dlib", 0.5))
SSIM_BAR = 0.30  # face-crop SSIM a private profile stays under (a flat mean-colour image scores ~0.31)
# A noisy AP is averaged over this many noise draws: on 50 photos one draw's AP swings by about a point
# (measured: 0.947-0.968 over 8 draws of one profile), as much as the 1.5-point bar itself.
AP_DRAWS = 5


def held_out_sets(shared: Path, profiles: Mapping[str, NoiseProfile | None], limit: int | None = None
                  ) -> dict[str, EvalSet]:
    """The accuracy sets minus every image any of ``profiles`` was fitted on (the union: every profile is
    then scored on the very same images, so their APs compare); the first ``limit`` of each, with a limit."""
    seen = {key for profile in profiles.values() if profile is not None for key in profile.fitted_on.get("seen", [])}
    faces = shared / "data" / "faces"
    sets = {}
    for name, _ in ACCURACY_SETS:
        labels = faces / name / "labels.json"
        if labels.is_file():
            held_out = coco_set(labels, faces / name / "images").without(seen)
            if limit is not None:
                held_out = _first(held_out, limit)
            if held_out.folds:
                sets[name] = held_out
    return sets


def _first(eval_set: EvalSet, limit: int) -> EvalSet:
    """The first ``limit`` images of ``eval_set``, in their folds (which keep their numbers)."""
    folds, numbers, left = [], [], limit
    for number, fold in zip(eval_set.fold_numbers, eval_set.folds, strict=True):
        if left <= 0:
            break
        folds.append(fold[:left])
        numbers.append(number)
        left -= len(folds[-1])
    return EvalSet(eval_set.name, tuple(folds), fold_numbers=tuple(numbers))


def accuracy(detector: SplitDetector, profile: NoiseProfile | None, sets: Mapping[str, EvalSet],
             draws: int = AP_DRAWS) -> dict[str, dict]:
    """Pooled AP of ``detector`` (with the profile's noise-aware tail, if any) on each of ``sets``: with a
    profile, the mean over ``draws`` noise draws from the product's stream with fixed keys 0, 1, ...
    (reproducible), each draw's AP kept: {set: {ap, ap_draws, iou, images, folds}}."""
    noisy = detector if profile is None else with_tail(detector, profile.tail_state)
    thresholds = dict(ACCURACY_SETS)
    result = {}
    for name, eval_set in sets.items():
        per_draw = []
        for seed in range(1 if profile is None else draws):
            obfuscate = None if profile is None else Obfuscator(
                profile, GaussianStream(seed_for_reproducible_evaluation=seed))
            found = detect_images(noisy, eval_set.images, obfuscate, desc=f"AP {name}")
            per_draw.append(precision_recall([(found[i.key], i.boxes) for i in eval_set.images], thresholds[name]).ap)
        result[name] = {"ap": float(np.mean(per_draw)), "ap_draws": per_draw, "iou": thresholds[name],
                        "images": len(eval_set.images), "folds": list(eval_set.fold_numbers)}
    return result


def ap_text(found: dict) -> str:
    """One set's AP as `accuracy` returns it, for a table: the mean, and the draws' range when several."""
    draws = found.get("ap_draws", [])
    return f"{found['ap']:.3f}" + (f" [{min(draws):.3f}-{max(draws):.3f}]" if len(draws) > 1 else "")


def plot_tradeoff(points: list[dict], path: Path, ap_set: str = "mitcmu") -> Path:
    """AP (y) against the strongest attack's face SSIM and re-identification rate (x), one point per profile
    at each k, labelled with its name. ``points``: {name, alpha (None: no noise), rank (optional; profiles
    with a basis are drawn apart from the per-channel line), accuracy (as `accuracy` returns), strongest:
    {k: `report.strongest`'s summary}}."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    k_values = sorted({k for point in points for k in point["strongest"]})
    markers = dict(zip(k_values, "os^vD", strict=False))
    for ax, metric, label in ((axes[0], "face_ssim", "face-crop SSIM (strongest attack)"),
                              (axes[1], "reid", "re-identification rate, another photo (strongest attack)")):
        for k in k_values:
            shown = [p for p in points if k in p["strongest"] and ap_set in p["accuracy"]]
            for in_basis in (False, True):
                group = [p for p in shown if bool(p.get("rank")) == in_basis]
                xs = [_privacy(p["strongest"][k], metric) for p in group]
                ys = [p["accuracy"][ap_set]["ap"] for p in group]
                if in_basis:
                    ax.plot(xs, ys, "*", ms=10, label=f"k = {k}, with a basis (--rank)")
                else:
                    ax.plot(xs, ys, markers[k] + "-", lw=0.8, label=f"k = {k}")
                for x, y, p in zip(xs, ys, group, strict=True):
                    ax.annotate(_label(p), (x, y), fontsize=7, textcoords="offset points", xytext=(4, 3))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    # the bar a profile is held to: AP within 1.5 points of clean, face SSIM <= 0.30, re-id <= 2x chance
    clean = [p["accuracy"][ap_set]["ap"] for p in points if p["alpha"] is None and ap_set in p["accuracy"]]
    for ax in axes if clean else ():
        ax.axhline(clean[0] - 0.015, color="green", lw=0.8, ls="--", label="clean AP - 1.5 points")
    axes[0].axvline(SSIM_BAR, color="red", lw=0.8, ls="--", label=f"face SSIM {SSIM_BAR}")
    chance = [p["strongest"][k]["reid_other_photo"]["chance"] for p in points for k in p["strongest"]]
    if chance:
        axes[1].axvline(max(chance), color="grey", lw=0.8, ls=":", label="chance")
        axes[1].axvline(2 * max(chance), color="red", lw=0.8, ls="--", label="2 x chance")
    axes[0].set_ylabel(f"AP, {ap_set} (held out)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle("Accuracy against what the attacker recovers (lower x is more private)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(point: dict) -> str:
    """clean, the alpha of a grid profile ("alpha-0.2" -> 0.2), or the profile's (file) name."""
    if point["alpha"] is None:
        return "clean"
    return Path(point["name"]).name.removesuffix(".safetensors").removeprefix("alpha-")


def _privacy(summary: dict, metric: str) -> float:
    return summary["reid_other_photo"]["rate"] if metric == "reid" else summary["face_ssim"]
