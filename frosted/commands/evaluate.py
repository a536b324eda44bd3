"""`frosted eval`: TR-4928's per-fold AP report on a COCO face set or FDDB's folds."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from frosted.options import coco_options, json_option, model_options, seed_option, threshold_option

if TYPE_CHECKING:
    from facesplit.evaluation.sets import EvalSet
    from facesplit.preprocess import InputSize


@click.command("eval")
@coco_options("to evaluate on")
@click.option("--fddb", "fddb_root", type=click.Path(path_type=Path), default=None,
              help="FDDB folder holding FDDB-folds/ and the images (originalPics/ or the year folders).")
@click.option("--iou", "ious", type=click.FloatRange(0, 1, min_open=True), multiple=True,
              help="IoU for a true positive; repeat for several (default 0.5).")
@threshold_option("Operating threshold at which recall and false positives are reported.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images (quick runs).")
@click.option("--name", default=None, help="Set name in the report (default: the labels' folder name).")
@json_option("Write every figure here ('-': stdout, and the report to stderr). Default: no file.")
@click.option("--save-detections", "detections_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the raw detections (JSON lines) so later runs can compare.")
@click.option("--detections", "saved", type=click.Path(path_type=Path), default=None,
              help="Score these saved detections instead of running the model.")
@click.option("--noise", default=None, metavar="PROFILE",
              help="Add this noise profile (a shipped name, see 'frosted profiles', or a file) to every activation;"
                   " images the profile was fitted on are skipped.")
@seed_option()
@model_options()
def evaluate(coco_labels: Path | None, images_dir: Path | None, fddb_root: Path | None, folds: int,
             ious: tuple[float, ...], threshold: float, limit: int | None, name: str | None,
             json_path: Path | None, detections_out: Path | None, saved: Path | None,
             noise: str | None, seed: int | None, weights: Path | None, split: str | None, input_size: InputSize,
             threads: int | None) -> None:
    """Per-fold average precision, printed as TR-4928's results block (one per IoU)."""
    # imported here, not at the top: `frosted --help` and `frosted eval --help` must not wait for torch
    from facesplit.detector import load_detector, with_tail
    from facesplit.evaluation.detections import detect_images, load_detections, save_detections
    from facesplit.evaluation.report import results_block, score_set
    from facesplit.noise.profile import Obfuscator
    from facesplit.noise.sampler import GaussianStream
    from facesplit.noise.shipped import load_profile_for, split_for
    from facesplit.weights import resolve_weights, sha256_of

    started = time.perf_counter()
    eval_set = _load_set(coco_labels, images_dir, fddb_root, folds, limit, name, need_images=saved is None)
    ious = ious or (0.5,)
    provenance: dict = {"input_size": str(input_size)}
    if saved is not None:
        detections = load_detections(saved)
        provenance["detections_from"] = str(saved)
    else:
        split = split_for(split, [noise] if noise is not None else [])
        detector = load_detector(weights, input_size, threads=threads, split=split)
        provenance["split"] = split
        weights_file = resolve_weights(weights)
        provenance.update(weights=str(weights_file), weights_sha256=sha256_of(weights_file))
        obfuscate = None
        if noise is not None:
            profile = load_profile_for(detector, noise)
            detector = with_tail(detector, profile.tail_state)
            obfuscate = Obfuscator(profile, GaussianStream(seed_for_reproducible_evaluation=seed))
            before = len(eval_set.images)
            eval_set = eval_set.without(set(profile.fitted_on.get("seen", [])))
            skipped = before - len(eval_set.images)
            if not eval_set.folds:
                raise click.UsageError(f"every image of {eval_set.name} was used to fit {noise}: nothing to evaluate")
            if skipped:
                click.echo(f"Skipping {skipped} images that {noise} was fitted on", err=True)
            provenance.update(noise=noise, noise_alpha=profile.alpha, noise_fingerprint=profile.fingerprint,
                              noise_seed=seed, skipped_fitted_images=skipped)
        detections = detect_images(detector, eval_set.images, obfuscate, desc=eval_set.name)
    if detections_out is not None:
        with _writing(detections_out):
            save_detections(detections_out, detections)
    scores = score_set(eval_set, detections, ious, threshold)
    scores.update(provenance, wall_time_s=round(time.perf_counter() - started, 2))
    to_stdout = json_path is not None and str(json_path) == "-"
    say = functools.partial(click.echo, err=to_stdout)  # with --json -, stdout is the JSON alone
    for iou in ious:
        summary = scores["by_iou"][str(iou)]
        say(f"IoU threshold: {iou}")
        say(results_block(scores, iou))
        say(f"Pooled AP over all {scores['images']} images ({scores['faces']} faces): "
            f"{summary['pooled_ap']:.4f}; at score >= {threshold}: recall {summary['recall']:.4f}, "
            f"{summary['false_positives']} false positives")
    if "fddb_roc" in scores:
        roc = scores["fddb_roc"]
        say(f"FDDB ROC at 1000 false positives: discrete {roc['discrete_tpr_at_1000_fp']:.4f}, "
            f"continuous {roc['continuous_tpr_at_1000_fp']:.4f}")
    if to_stdout:
        click.echo(json.dumps(scores, indent=1))
    elif json_path is not None:
        with _writing(json_path):
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(scores, indent=1))
        say(f"Wrote {json_path} (wall time {scores['wall_time_s']} s)")
    else:
        say(f"Wall time {scores['wall_time_s']} s")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An output that cannot be written (no permission, a file where a folder should be) is one line."""
    try:
        yield
    except OSError as exc:
        raise click.FileError(str(path), hint=exc.strerror or str(exc)) from None


def _load_set(coco_labels: Path | None, images_dir: Path | None, fddb_root: Path | None, folds: int,
              limit: int | None, name: str | None, need_images: bool) -> EvalSet:
    from facesplit.evaluation.sets import coco_set, fddb_set

    if (coco_labels is None) == (fddb_root is None):
        raise click.UsageError("give exactly one of --coco LABELS.json or --fddb DIR")
    if fddb_root is not None:
        return fddb_set(fddb_root, limit, need_images)
    assert coco_labels is not None
    return coco_set(coco_labels, images_dir or coco_labels.parent / "images", folds, limit, name)
