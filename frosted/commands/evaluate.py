"""`frosted eval`: TR-4928's per-fold AP report on a COCO face set or FDDB's folds."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from facesplit.outputs import write_text
from frosted.options import (
    FiniteFloatRange,
    check_outputs,
    check_precision_option,
    coco_options,
    device_option,
    json_option,
    model_options,
    options_given,
    precision_options,
    runtime_option,
    seed_option,
    threshold_option,
)

if TYPE_CHECKING:
    from facesplit.evaluation.sets import EvalSet
    from facesplit.preprocess import InputSize


@click.command("eval")
@coco_options("to evaluate on")
@click.option("--fddb", "fddb_root", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="FDDB folder holding FDDB-folds/ and the images (originalPics/ or the year folders).")
@click.option("--iou", "ious", type=FiniteFloatRange(0, 1, min_open=True), multiple=True,
              help="IoU for a true positive; repeat for several (default 0.5).")
@threshold_option("Operating threshold at which recall and false positives are reported.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images (quick runs).")
@click.option("--name", default=None, help="Set name in the report (default: the labels' folder name).")
@json_option("Write every figure here ('-': stdout, and the report to stderr). Default: no file.")
@click.option("--save-detections", "detections_out", type=click.Path(path_type=Path),
              default=None, metavar="FILE",
              help="Save the raw detections (JSON lines) so later runs can compare.")
@click.option("--detections", "saved", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Score these saved detections instead of running the model.")
@click.option("--noise", default=None, metavar="PROFILE",
              help="Add this noise profile (a shipped name, see 'frosted profiles', or a file) to every activation;"
                   " images the profile was fitted on are skipped.")
@seed_option("Reproducible noise, for evaluation only: each image's noise is drawn from (seed, image name), so "
             "it is the same whichever process or --fold evaluates it (default: fresh noise from the OS's CSPRNG).")
@click.option("--fold", type=click.IntRange(1), default=None, metavar="N",
              help="Evaluate fold N alone (1-based, as the report numbers them) and print its line; --json then "
                   "writes the fold JSON that --merge combines (every detection's score and match, not just the AP).")
@click.option("--merge", "merge_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Combine the fold JSONs in DIR (one per fold, from --fold runs) into the whole run's report and "
                   "--json: the figures of one process evaluating every fold, to the last digit.")
@click.option("--wait", "wait_s", type=FiniteFloatRange(0, 7 * 24 * 3600), default=None, metavar="SECONDS",
              help="With --merge: wait up to SECONDS (at most a week) for folds still missing from DIR (a merge "
                   "started beside the fold runs).")
@model_options()
@runtime_option()
@device_option()
@precision_options()
def evaluate(coco_labels: Path | None, images_dir: Path | None, fddb_root: Path | None, folds: int,
             ious: tuple[float, ...], threshold: float, limit: int | None, name: str | None,
             json_path: Path | None, detections_out: Path | None, saved: Path | None,
             noise: str | None, seed: int | None, fold: int | None, merge_dir: Path | None, wait_s: float | None,
             weights: Path | None, split: str | None, input_size: InputSize, threads: int | None,
             runtime: str, device: str, precision: str, calibration: Path | None) -> None:
    """Per-fold average precision, printed as TR-4928's results block (one per IoU)."""
    if merge_dir is not None:
        merge(merge_dir, wait_s, json_path)
        return
    if wait_s is not None:
        raise click.UsageError("--wait goes with --merge DIR")
    check_precision_option(precision, runtime, device, calibration)
    # imported here, not at the top: `frosted --help` and `frosted eval --help` must not wait for torch
    from facesplit.detector import load_detector, with_tail
    from facesplit.evaluation.detections import detect_images, load_detections, save_detections
    from facesplit.evaluation.folds import fold_record
    from facesplit.evaluation.noise import ImageNoise
    from facesplit.evaluation.report import combine, fold_report_lines, report_lines, score_folds
    from facesplit.noise.shipped import load_profile_for, split_for
    from facesplit.weights import resolve_weights, sha256_of

    started = time.perf_counter()
    eval_set = _load_set(coco_labels, images_dir, fddb_root, folds, limit, name, need_images=saved is None)
    fold_count, fingerprint = len(eval_set.folds), ""
    if fold is not None:
        if fold > fold_count:
            raise click.BadParameter(f"{fold}: {eval_set.name} has {fold_count} folds (1-{fold_count})",
                                     param_hint="'--fold'")
        fingerprint = eval_set.fingerprint()  # of the whole set, before any image is skipped: every fold's
        eval_set = eval_set.only_fold(fold)
    ious = ious or (0.5,)
    inputs = [path for path in (coco_labels, saved, weights, Path(noise) if noise else None) if path is not None]
    check_outputs({"--json": json_path, "--save-detections": detections_out},
                  inputs + [image.path for image in eval_set.images])
    provenance: dict = {"input_size": str(input_size)}
    if saved is not None:
        _check_no_model_options(click.get_current_context())
        detections = load_detections(saved)
        _check_covered(detections, eval_set, saved)
        provenance["detections_from"] = str(saved)
    else:
        split = split_for(split, [noise] if noise is not None else [])
        detector = load_detector(weights, input_size, threads=threads, split=split)
        provenance["split"] = split
        weights_file = resolve_weights(weights)
        provenance.update(weights=str(weights_file), weights_sha256=sha256_of(weights_file))
        obfuscate, noise_profile = None, None
        if noise is not None:
            profile = load_profile_for(detector, noise)
            detector = with_tail(detector, profile.tail_state)
            noise_profile = profile
            before = len(eval_set.images)
            eval_set = eval_set.without(set(profile.fitted_on.get("seen", [])))
            skipped = before - len(eval_set.images)
            if not eval_set.folds and fold is None:
                raise click.UsageError(f"every image of {eval_set.name} was used to fit {noise}: nothing to evaluate")
            if skipped:
                click.echo(f"Skipping {skipped} images that {noise} was fitted on", err=True)
            if fold is not None and seed is None:
                click.echo(f"Note: fold {fold}'s noise is fresh (no --seed): the folds merge, but the run cannot be "
                           "repeated", err=True)
            provenance.update(noise=noise, noise_alpha=profile.alpha, noise_fingerprint=profile.fingerprint,
                              noise_seed=seed, skipped_fitted_images=skipped)
        from facesplit.pipeline import noise_device
        from facesplit.runtimes.factory import detector_on

        provenance["runtime"] = runtime
        if device != "cpu":  # --seed's noise is another cipher's there: folds must not merge with the CPU's
            provenance["device"] = device
        if precision != "float32":  # another head: folds of the float head's run must not merge with these
            provenance.update(precision=precision, calibration=str(calibration or "MIT+CMU folds 1-5"))
        on_runtime = detector_on(runtime, detector, threads, precision=precision, calibration=calibration,
                                 device=device)
        if noise_profile is not None:  # drawn where the head leaves the activation: per device, another cipher
            obfuscate = ImageNoise(noise_profile, seed, noise_device(on_runtime.head.runtime))
        detections = detect_images(on_runtime, eval_set.images, obfuscate,  # type: ignore[arg-type]
                                   desc=eval_set.name)
    if detections_out is not None:
        save_detections(detections_out, detections)
    scored = score_folds(eval_set, detections, ious)
    scores = combine(eval_set.name, scored, [str(iou) for iou in ious], threshold)
    scores.update(provenance, wall_time_s=round(time.perf_counter() - started, 2))
    if fold is None:
        emit(report_lines(scores), scores, json_path)
    else:
        emit(fold_report_lines(scores, fold, fold_count),
             fold_record(scores, scored[0] if scored else None, fold, fold_count, fingerprint, provenance), json_path)


def merge(folder: Path, wait_s: float | None, json_path: Path | None) -> None:
    """`frosted eval --merge DIR`: the whole run's report from its fold JSONs."""
    from facesplit.evaluation.folds import merge_folds, wait_for_folds
    from facesplit.evaluation.report import report_lines

    ctx = click.get_current_context()
    flags = {param.name: param.opts[0] for param in ctx.command.params
             if param.name is not None and param.name not in ("merge_dir", "wait_s", "json_path")}
    given = [flags[name] for name in options_given(ctx, flags)]
    if given:
        raise click.UsageError(f"--merge combines the fold JSONs as the --fold runs wrote them: it takes --json and "
                               f"--wait only, not {', '.join(given)}")
    check_outputs({"--json": json_path})  # before the wait, which may be hours
    started = time.perf_counter()
    files = wait_for_folds(folder, wait_s or 0.0, functools.partial(click.echo, err=True))
    check_outputs({"--json": json_path}, [file.path for file in files])  # over a fold, it would lose that fold
    scores = merge_folds(files)
    scores["wall_time_s"] = round(time.perf_counter() - started, 2)
    emit(report_lines(scores), scores, json_path)


def emit(lines: list[str], document: dict, json_path: Path | None) -> None:
    """Print the report and write ``document`` to --json. The file appears whole or not at all (written
    beside it, then renamed): a merge may be waiting to read it."""
    to_stdout = json_path is not None and str(json_path) == "-"
    say = functools.partial(click.echo, err=to_stdout)  # with --json -, stdout is the JSON alone
    for line in lines:
        say(line)
    if to_stdout:
        click.echo(json.dumps(document, indent=1))
    elif json_path is not None:
        write_text(json_path, json.dumps(document, indent=1))  # whole or not at all: a merge may be waiting on it
        say(f"Wrote {json_path} (wall time {document['wall_time_s']} s)")
    else:
        say(f"Wall time {document['wall_time_s']} s")


# What chooses the model that makes detections: meaningless beside --detections, which scores saved ones.
MODEL_OPTIONS = ("weights", "split", "threads", "noise", "seed", "runtime", "device", "precision", "calibration")


def _check_no_model_options(ctx: click.Context) -> None:
    if given := options_given(ctx, MODEL_OPTIONS):
        raise click.UsageError(f"--detections scores saved detections, no model runs: drop --{given[0]}")


def _check_covered(detections: dict, eval_set: EvalSet, saved: Path) -> None:
    """Saved detections that lack some of the set's images would score them as misses: refuse them."""
    missing = [image.key for image in eval_set.images if image.key not in detections]
    if missing:
        raise click.UsageError(f"{saved}: no detections for {len(missing)} of the {len(eval_set.images)} images of "
                               f"{eval_set.name} (e.g. {missing[0]}): saved from another set, or with --limit?")


def _load_set(coco_labels: Path | None, images_dir: Path | None, fddb_root: Path | None, folds: int,
              limit: int | None, name: str | None, need_images: bool) -> EvalSet:
    from facesplit.evaluation.sets import coco_set, fddb_set

    if (coco_labels is None) == (fddb_root is None):
        raise click.UsageError("give exactly one of --coco LABELS.json or --fddb DIR")
    if fddb_root is not None:
        return fddb_set(fddb_root, limit, need_images)
    assert coco_labels is not None
    return coco_set(coco_labels, images_dir or coco_labels.parent / "images", folds, limit, name)
