"""`frosted fit-noise`: fit a noise profile (and optionally a noise-aware tail) for the head's activation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from frosted.options import FiniteFloatRange, check_outputs, coco_options, model_options, options_given, seed_option

MLP_STEPS_PER_EPOCH = 300  # the MLP probe's own steps on the current noise before each epoch of the fit

if TYPE_CHECKING:
    from facesplit.faceboxes import FaceBoxes
    from facesplit.preprocess import InputSize
    from privacy_attack.defence import IdentityAdversary
    from privacy_attack.people import FacePhoto


MAX_FOLD = 1000  # a fold number past any set's fold count: --folds says how many there are


def _fold_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int]:
    if value is None:
        return []
    folds: list[int] = []
    for part in value.split(","):
        low_text, _, high_text = part.partition("-")
        try:
            low, high = int(low_text), int(high_text or low_text)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected fold numbers such as '1-5' or '1,3,5'") from None
        if not 1 <= low <= high <= MAX_FOLD:  # checked before the range is made: 1-99999999999 is a list of 800 GB
            raise click.BadParameter(f"{part!r}: folds run from 1 up, low to high, to at most {MAX_FOLD}")
        folds += range(low, high + 1)
    return folds


@click.command("fit-noise")
@click.option("--alpha", type=FiniteFloatRange(0, 1, max_open=True), default=None,
              help="Privacy weight: loss = (1 - alpha) task + alpha privacy (see --privacy). Required, unless "
                   "--noise-from brings it.")
@click.option("--noise-from", default=None, metavar="PROFILE",
              help="A shipped profile's name (see 'frosted profiles') or a file: keep its noise bit for bit (mu, "
                   "sigma, basis: every privacy figure measured on it still holds) and train only its noise-aware "
                   "tail on, --tail-epochs more, on the data given (e.g. more of the site's frames). Its alpha, "
                   "split, rank and input size come with it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="FILE",
              help="Profile file to write (.safetensors).")
@click.option("--frames", "frame_sources", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Unlabelled frames to fit on (a folder of images or a video; repeatable).")
@coco_options("to fit on (with --use-folds)")
@click.option("--use-folds", callback=_fold_list, default=None,
              help="Which COCO folds to fit on, e.g. '1-5': evaluate on the others.")
@click.option("--task", type=click.Choice(["distill", "multibox"]), default="distill", show_default=True,
              help="distill: match the clean model's outputs (no labels); multibox: match the COCO labels.")
@click.option("--epochs", type=click.IntRange(1), default=12, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--augmentations", type=click.IntRange(0, 64), default=4, show_default=True,
              help="Augmented copies (scale, crop, flip, colour) of each image, cached with it.")
@click.option("--tune-tail", is_flag=True, help="Also fine-tune a noise-aware tail, saved in the profile.")
@click.option("--tail-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Then train the noise-aware tail alone this many more epochs, the noise frozen "
                   "(with --tune-tail).")
@click.option("--rank", type=click.IntRange(1), default=None,
              help="Keep only this many principal directions of the activation's channels (of the frames fitted "
                   "on) and add the noise along them; the fine detail in the rest, which faces are "
                   "reconstructed from, is dropped. Default: every channel.")
@click.option("--privacy", type=click.Choice(["log-sigma", "information"]), default="log-sigma", show_default=True,
              help="Privacy term: TR-4928's -mean(log sigma), or the information the noisy activation lets "
                   "through (1/2 log(1 + var/sigma^2) per element), which puts the noise where the signal is.")
@click.option("--dct", is_flag=True,
              help="Learn the noise per spatial frequency of each activation map (its 2-D DCT), not per position: "
                   "neighbouring positions are correlated, frequencies nearly are not.")
@click.option("--max-frames", type=click.IntRange(1), default=300, show_default=True,
              help="At most this many frames from each folder or video.")
@click.option("--adversary-faces", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Fit against an identity probe trained on these face photos (any layout; repeat for several; "
                   "needs the attack extra): before every epoch the probe is retrained on the current noise, and "
                   "every step also pays for what it still identifies. Not with --dct.")
@click.option("--adversary-weight", type=FiniteFloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Weight of the identity probe's term beside (1 - alpha) task + alpha privacy.")
@click.option("--adversary-probe", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="linear: the noise-aware ridge, refitted before every epoch; mlp: also the residual MLP probe "
                   "(the strongest attack), trained in alternating steps with the noise.")
@click.option("--adversary-decoder", is_flag=True,
              help="Also fit against the face decoder (the noise-aware ridge from the crop to the face's pixels), "
                   "refitted before every epoch: the noise then hides what the face looks like, not only whose "
                   "it is.")
@click.option("--adversary-face-size", type=click.IntRange(24, 384), default=96, show_default=True, metavar="PX",
              help="The face size, in pixels at the model input, at which the attacker's faces are placed for the "
                   "adversary: larger faces give it more of the activation (a close camera).")
@seed_option("Seed of the fit (augmentation, training noise); the profile records it (default: one drawn "
             "fresh from the OS's CSPRNG, printed).")
@model_options()
def fit_noise(alpha: float | None, noise_from: str | None, out: Path, frame_sources: tuple[Path, ...],
              coco_labels: Path | None, images_dir: Path | None, folds: int, use_folds: list[int], task: str,
              epochs: int, batch_size: int,
              augmentations: int, tune_tail: bool, tail_epochs: int, rank: int | None, privacy: str, dct: bool,
              max_frames: int, adversary_faces: tuple[Path, ...], adversary_weight: float, adversary_probe: str,
              adversary_decoder: bool, adversary_face_size: int, seed: int | None,
              weights: Path | None, split: str | None, input_size: InputSize,
              threads: int | None) -> None:
    """Fit a noise profile: the frozen head's activations plus learned noise that the tail tolerates."""
    # imported here, not at the top: `frosted --help` and `frosted fit-noise --help` must not wait for torch
    import secrets

    from facesplit.faceboxes import DEFAULT_SPLIT, activation_shape
    from facesplit.noise.fit import FitConfig, build_training_set, fit_profile
    from facesplit.noise.fit_data import frames_from, labelled_from_coco
    from facesplit.noise.profile import NoiseProfile, split_of
    from facesplit.noise.shipped import resolve_profile
    from facesplit.runtime import tune_cpu_runtime
    from facesplit.weights import head_fingerprint, load_faceboxes

    inputs = [*frame_sources, *(p for p in (coco_labels, weights) if p is not None)]
    check_outputs({"--out": out}, inputs)  # before the fit, which is minutes to hours, not after it
    if coco_labels is not None and not use_folds:
        raise click.UsageError("--coco needs --use-folds (keep other folds for evaluation)")
    if use_folds and max(use_folds) > folds:
        raise click.BadParameter(f"fold {max(use_folds)} does not exist: --folds {folds} makes folds 1-{folds}",
                                 param_hint="--use-folds")
    images = [image for source in frame_sources for image in frames_from(source, max_frames)]
    if coco_labels is not None:
        images += labelled_from_coco(coco_labels, images_dir or coco_labels.parent / "images", folds, use_folds)
    if not images:
        raise click.UsageError("nothing to fit on: give --frames and/or --coco with --use-folds")
    if task == "multibox" and any(image.boxes is None for image in images):
        raise click.UsageError("--task multibox needs labels: use --coco only (frames are unlabelled)")
    if tail_epochs and not tune_tail:
        raise click.UsageError("--tail-epochs trains the noise-aware tail: add --tune-tail")
    if noise_from is not None:
        _check_noise_from(click.get_current_context(), tail_epochs, tune_tail)
    elif alpha is None:
        raise click.UsageError("give --alpha (or --noise-from PROFILE to keep a profile's noise)")
    if adversary_decoder and not adversary_faces:
        raise click.UsageError("--adversary-decoder trains on the attacker's faces: add --adversary-faces DIR")
    if adversary_face_size != 96 and not adversary_faces:
        raise click.UsageError("--adversary-face-size places the attacker's faces: add --adversary-faces DIR")
    if seed is None:  # drawn, so the profile's fitted_on records the seed the fit really used
        seed = secrets.randbits(31)
    start_path = resolve_profile(noise_from) if noise_from is not None else None
    # a frame of a --frames folder, or the --noise-from profile, named as --out would be overwritten by the fit
    check_outputs({"--out": out}, [image.path for image in images] + ([start_path] if start_path else []))
    tune_cpu_runtime(threads)
    if start_path is not None:
        split = split_of(start_path)
    model = load_faceboxes(weights, split or DEFAULT_SPLIT)
    start = None
    if start_path is not None:
        start = NoiseProfile.load(start_path, head_fingerprint(model), (input_size.width, input_size.height))
        alpha, epochs = start.alpha, 0
    assert alpha is not None
    config = FitConfig(alpha=alpha, task=task, input_size=input_size, epochs=epochs,  # type: ignore[arg-type]
                       batch_size=batch_size, augmentations=augmentations, tune_tail=tune_tail,
                       tail_epochs=tail_epochs, rank=rank, privacy=privacy, dct=dct, seed=seed)  # type: ignore[arg-type]
    channels = activation_shape(32, 32)[0]  # the same for every input size
    if rank is not None and rank > channels:
        raise click.BadParameter(f"{rank}: the activation has only {channels} channels", param_hint="--rank")
    if adversary_faces and dct:
        raise click.UsageError("--adversary-faces fits noise per element (with or without --rank): drop --dct")
    if missing := [folder for folder in adversary_faces if not folder.is_dir()]:  # before the activations are made
        raise click.ClickException(f"--adversary-faces {missing[0]}: no such folder")
    if adversary_faces and (input_size.native or (input_size.width, input_size.height) != (1024, 1024)):
        raise click.UsageError("--adversary-faces places the attacker's faces in 1024x1024 frames: leave "
                               "--input-size at 1024")
    attacker = _attacker_faces(adversary_faces) if adversary_faces else []  # before the activations too
    data = build_training_set(model, images, config)
    adversary = (_adversary(model, attacker, adversary_weight, adversary_probe, adversary_decoder,
                            adversary_face_size, seed) if adversary_faces else None)
    sources = [str(s) for s in frame_sources] + ([f"{coco_labels} folds {use_folds}"] if coco_labels else [])
    sources += [f"noise from {start_path}"] if start_path else []
    fitted_on: dict = {"sources": sources, "images": len(images)}
    if adversary is not None:
        fitted_on["adversary"] = {"faces": [str(p) for p in adversary_faces], "crops": len(adversary.faces),
                                  "weight": adversary_weight, "face_size": adversary_face_size,
                                  "probe": ADVERSARY_PROBES[adversary_probe]
                                  + (DECODER_NOTE if adversary_decoder else "")}
    profile = fit_profile(model, data, config, fitted_on=fitted_on, adversary=adversary, start=start)
    profile.save(out)
    history = profile.fitted_on["history"][-1]
    objective = privacy + (", per frequency" if dct else "") + (f", noise kept from {start_path}" if start else "")
    click.echo(f"Wrote {out}: alpha {alpha} ({objective}, split {model.split}), {len(images)} images x "
               f"{augmentations + 1} views, "
               f"{profile.fitted_on['fit_seconds']} s, final task loss {history['task']:.4f}, "
               f"mean sigma {history['mean_sigma']:.4f}, "
               + (f"rank {profile.rank} ({profile.fitted_on['energy_kept']:.1%} of the activation's energy), "
                  if profile.rank else "")
               + f"seed {seed}, fingerprint {profile.fingerprint}")


ADVERSARY_PROBES = {"linear": "noise-aware ridge, retrained every epoch",
                    "mlp": "noise-aware ridge, retrained every epoch, and the residual MLP probe in alternating steps "
                           f"({MLP_STEPS_PER_EPOCH} before every epoch, one beside every step)"}


DECODER_NOTE = "; and the ridge face decoder (crop to 32-px pixels), retrained every epoch"


def _attacker_faces(folders: tuple[Path, ...]) -> list[FacePhoto]:
    from privacy_attack.people import ATTACKER_MIN_PHOTOS, read_faces

    return read_faces(list(folders), ATTACKER_MIN_PHOTOS)


def _adversary(model: FaceBoxes, photos: list[FacePhoto], weight: float, probe: str, decoder: bool,
               face_size: int, seed: int) -> IdentityAdversary:
    """The identity probe to fit against (`privacy_attack.defence`), on the attacker's ``photos``."""
    from privacy_attack.defence import IdentityAdversary, adversary_crops
    from privacy_attack.measure import require_reid

    require_reid()
    crops = adversary_crops(model.head.eval(), model.split, photos, side=face_size, seed=seed)
    return IdentityAdversary(crops, weight, seed=seed, mlp_steps=MLP_STEPS_PER_EPOCH if probe == "mlp" else 0,
                             face_decoder=decoder)


# What a profile's noise fixes, so a fit that keeps it cannot also be told to change it.
NOISE_OPTIONS = ("alpha", "epochs", "rank", "privacy", "dct", "adversary_faces", "adversary_weight", "adversary_probe",
                 "adversary_decoder", "adversary_face_size", "split")


def _check_noise_from(ctx: click.Context, tail_epochs: int, tune_tail: bool) -> None:
    if given := options_given(ctx, NOISE_OPTIONS):
        raise click.UsageError(f"--noise-from keeps the profile's noise: drop --{given[0].replace('_', '-')}")
    if not (tune_tail and tail_epochs):
        raise click.UsageError("--noise-from trains only the noise-aware tail: add --tune-tail --tail-epochs N")

