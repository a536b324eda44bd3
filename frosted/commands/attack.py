"""`frosted attack`: what an attacker who knows everything but the noise draws recovers from noisy activations."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from frosted.options import MAX_SEED, FiniteFloatRange, check_outputs, model_options

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize


def _seed(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None or value == "random":  # 'random': the old spelling of no seed, still accepted
        return None
    try:
        seed = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected an integer or 'random'") from None
    if not 0 <= seed <= MAX_SEED:
        raise click.BadParameter(f"{value}: expected 0-{MAX_SEED} or 'random'")
    return seed


@click.command()
@click.option("--noise", multiple=True, metavar="PROFILE",
              help="A noise profile to attack: a shipped name (see 'frosted profiles') or a file; repeat for "
                   "several. 'none' (or 'clean') is no noise, which is always attacked too (the baseline).")
@click.option("--k", "k_values", type=click.IntRange(1), multiple=True,
              help="The attacker averages k frames of a still scene (noise std / sqrt(k)); repeat for several "
                   "(default 1, 8, 30).")
@click.option("--attack", type=click.Choice(["decoder", "inversion", "both"]), default="both", show_default=True,
              help="decoder: a net trained on noisy activations of the attacker's own photos; inversion: "
                   "optimise an image to explain the activation. 'both' also reports the stronger.")
@click.option("--decoder-seconds", type=FiniteFloatRange(0, min_open=True), default=120.0, show_default=True,
              help="Training budget of the decoder, per profile.")
@click.option("--inversion-steps", type=click.IntRange(1), default=200, show_default=True,
              help="Optimisation steps of the inversion, per victim and k (about 0.1 s each on 2 cores). Fewer "
                   "understate the leak: against information-dct-alpha-0.7, face SSIM 0.24 at 40 steps, 0.43 at "
                   "100, 0.49 at 250.")
@click.option("--victims", default="all", show_default=True, metavar="all|labelled|DIR",
              help="'all': the unlabelled set's photos, attacked whole (decoder, inversion); 'labelled': only "
                   "those with a known identity. DIR: a folder of <person>/<photo>.jpg (identities from the folder "
                   "names), attacked at camera scale: each person's first photo is the gallery, the others are "
                   "placed in frames at each --scales face size and attacked by the identity probe and the face "
                   "decoder (rank-1 among 100 and all, TAR at FAR 1 %, face SSIM).")
@click.option("--attacker", "attacker_dirs", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="With --victims DIR: a folder of the attacker's face photos (any layout; repeat for several). "
                   "Default: the shared folder's data/faces/attacker.")
@click.option("--scales", default="48,96,192", show_default=True, metavar="PX[,PX...]",
              help="With --victims DIR: face sizes (box side in pixels at the model input) to place victims at.")
@click.option("--probe-seconds", type=FiniteFloatRange(0, min_open=True), default=120.0, show_default=True,
              help="With --victims DIR: training budget of the identity probe's MLP, per profile and k.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Attack only the first N victims (quick runs); re-identification still searches all of them.")
@click.option("--ap-limit", type=click.IntRange(1), default=None,
              help="Measure AP on only the first N held-out photos of each face set (quick runs; default all).")
@click.option("--shared", type=click.Path(path_type=Path), metavar="DIR", envvar="FROSTED_SHARED",
              default="../shared", show_default=True, show_envvar=True,
              help="Shared data folder with data/faces/unlabelled (victims) and data/faces/mitcmu (the attacker's "
                   "photos).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("attack-out"), metavar="DIR",
              show_default=True,
              help="Folder for attack.json, grid-<attack>.png (original | no noise | each profile at the "
                   "smallest and largest k) and tradeoff.png (AP against face SSIM and re-identification).")
@click.option("--seed", default=None, callback=_seed, metavar="INTEGER",
              help="Seed of the victims' noise (the product's AES stream with a fixed key): reproducible, and "
                   "every attack sees the same draws; for evaluation only. No seed: fresh noise from the OS's "
                   "CSPRNG, as the product draws it.")
@click.option("--draws", type=click.IntRange(1), default=1, show_default=True,
              help="Independent noise draws per victim and k, each attacked; SSIM and re-identification are "
                   "pooled over them (steadier on a handful of victims; each draw costs one more inversion).")
@model_options()
def attack(noise: tuple[str, ...], k_values: tuple[int, ...], attack: str, decoder_seconds: float,
           inversion_steps: int, victims: str, attacker_dirs: tuple[Path, ...], scales: str, probe_seconds: float,
           limit: int | None, ap_limit: int | None, shared: Path, out: Path,
           seed: int | None, draws: int, weights: Path | None, split: str | None, input_size: InputSize,
           threads: int | None) -> None:
    """Attack noisy activations (and clean ones) of held-out victims: SSIM/PSNR, dlib re-identification,
    and whether the detector still finds the face, in the reconstructions of each attack.

    The attacker knows the architecture, the weights and each profile's mu and sigma, and owns public
    face photos disjoint from the victims. Prints a table and writes attack.json, the grids and a plot
    of each profile's AP (on face-set photos none of them was fitted on) against what the attack recovers.
    """
    # imported here: scikit-image's metrics alone add most of a second to every other verb's start, and
    # torch several seconds to `frosted attack --help`
    from facesplit.detector import load_detector
    from facesplit.noise.shipped import split_for
    from facesplit.weights import resolve_weights, sha256_of
    from privacy_attack.decoder import DecoderConfig
    from privacy_attack.inversion import InversionConfig
    from privacy_attack.measure import (
        NO_NOISE_ALIASES,
        load_attacker,
        load_profiles,
        load_victims,
        measure,
        measure_accuracy,
        require_reid,
        table,
        write_report,
    )
    from privacy_attack.report import ATTACKS, AttackConfig

    started = time.perf_counter()
    check_outputs({"--out": out}, folders=["--out"])  # before minutes of attacking, not after
    if victims not in ("all", "labelled"):
        if attack != "both" or limit is not None or draws != 1:
            raise click.UsageError("--attack, --limit and --draws apply to the unlabelled set's whole-frame "
                                   "attacks, not to --victims DIR")
        _attack_people(Path(victims), attacker_dirs, _scales(scales), noise, k_values, probe_seconds, shared,
                       out, weights, split, input_size, threads, ap_limit)
        return
    if attacker_dirs:
        raise click.UsageError("--attacker goes with --victims DIR")
    if click.get_current_context().get_parameter_source("scales") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--scales places the faces of --victims DIR; the unlabelled set's photos are "
                               "attacked as they are")
    if input_size.native:
        raise click.UsageError("the attack needs a fixed --input-size (profiles are fitted for one), not 'native'")
    split = split_for(split, [name for name in noise if name not in NO_NOISE_ALIASES])
    detector = load_detector(weights, input_size, threads=threads, split=split)
    profiles = load_profiles(detector, noise)
    victim_photos, gallery = load_victims(shared, victims, limit)
    require_reid()  # before minutes of attacking, not after
    attacks = ATTACKS if attack == "both" else (attack,)
    config = AttackConfig(k_values=tuple(sorted(set(k_values or (1, 8, 30)))), attacks=attacks,
                          decoder=DecoderConfig(train_seconds=decoder_seconds),
                          inversion=InversionConfig(steps=inversion_steps, progress=True), noise_seed=seed,
                          draws=draws)
    attacker = load_attacker(shared)  # the decoder trains on them; the boxes-only baseline averages their faces
    runs = measure(detector, profiles, victim_photos, attacker, config, gallery)
    accuracies = measure_accuracy(detector, profiles, shared, ap_limit)
    weights_file = resolve_weights(weights)
    settings = {"noise": list(profiles), "k_values": list(config.k_values), "attacks": list(attacks),
                "decoder_seconds": decoder_seconds, "inversion_steps": inversion_steps, "victims": victims,
                "limit": limit, "ap_limit": ap_limit, "noise_seed": seed, "draws": draws,
                "input_size": str(input_size), "shared": str(shared),
                "weights": str(weights_file), "weights_sha256": sha256_of(weights_file)}
    report = write_report(out, runs, accuracies, settings=settings,
                          wall_time_s=round(time.perf_counter() - started, 1))
    click.echo(table(report))
    pictures = [out / g["file"] for g in report["grids"].values()] + [out / report["tradeoff"]]
    click.echo(f"Wrote {out / 'attack.json'} and {', '.join(map(str, pictures))} "
               f"(wall time {report['wall_time_s']} s)")


def _scales(text: str) -> tuple[int, ...]:
    try:
        sides = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected face sizes in pixels, e.g. 48,96,192",
                                 param_hint="--scales") from None
    if not sides or any(not 16 <= side <= 256 for side in sides):
        raise click.BadParameter(f"{text!r}: each face size must be 16-256 px", param_hint="--scales")
    return sides


def _attack_people(victims_dir: Path, attacker_dirs: tuple[Path, ...], scales: tuple[int, ...],
                   noise: tuple[str, ...], k_values: tuple[int, ...], probe_seconds: float, shared: Path, out: Path,
                   weights: Path | None, split: str | None, input_size: InputSize, threads: int | None,
                   ap_limit: int | None) -> None:
    """`frosted attack --victims DIR`: the camera-scale identity attacks (`privacy_attack.scale_report`)."""
    from facesplit.detector import load_detector
    from facesplit.noise.shipped import split_for
    from privacy_attack.at_scale import ScaleConfig
    from privacy_attack.measure import NO_NOISE_ALIASES, require_reid
    from privacy_attack.people import ATTACKER_MIN_PHOTOS, read_faces, read_people
    from privacy_attack.scale_report import TableInputs, TablePlan, markdown, run_table, write_outputs
    from privacy_attack.scene import Backgrounds

    if input_size.native or (input_size.width, input_size.height) != (1024, 1024):
        raise click.UsageError("--victims DIR places faces in 1024x1024 frames: leave --input-size at 1024")
    names = tuple(dict.fromkeys(name for name in noise if name not in NO_NOISE_ALIASES))
    split = split_for(split, list(names))
    people = read_people(victims_dir)
    attacker = read_faces(list(attacker_dirs) or [shared / "data" / "faces" / "attacker"], ATTACKER_MIN_PHOTOS)
    require_reid()
    detector = load_detector(weights, input_size, threads=threads, split=split)
    plan = TablePlan({split: names}, full_scales=scales, focus=names)
    from facesplit.noise.rotating import ROTATION_FRAMES

    k_values = tuple(sorted(set(k_values or (1, ROTATION_FRAMES))))
    config = ScaleConfig(scales=scales, k_values=k_values, rotating=ROTATION_FRAMES in k_values,
                         probe_seconds=probe_seconds)
    accuracy_from = shared if (shared / "data" / "faces").is_dir() else None
    inputs = TableInputs(people, attacker, Backgrounds.shipped(), accuracy_from, ap_limit)
    report = run_table(detector, inputs, plan, config,
                       settings={"victims": str(victims_dir), "attacker": [str(p) for p in attacker_dirs],
                                 "noise": list(names), "split": split})
    paths = write_outputs(report, out, "attack")
    click.echo(markdown(report))
    click.echo(f"Wrote {', '.join(map(str, paths))} (wall time {report['wall_time_s']} s)")
