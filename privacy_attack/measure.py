"""The privacy measurement end to end: victims and the attacker's photos from the shared data folder, both
attacks against no noise and against each profile, the report (JSON, grids, a table). `frosted attack` and
bench/privacy_table.py both run it.

Data (``shared/data/faces``): the victims are the ``unlabelled`` set (no profile was fitted on it;
identities from its pairs file), the attacker's photos MIT+CMU plus scikit-image's colour photos
(`attacker_photos`): public, and disjoint from every victim.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm

from facesplit.detector import SplitDetector
from facesplit.errors import FrostedError
from facesplit.noise.profile import NoiseProfile
from facesplit.noise.shipped import load_profile_for
from facesplit.outputs import write_text
from privacy_attack.datasets import Photo, attacker_photos, read_unlabelled
from privacy_attack.decoder import build_bank
from privacy_attack.reid import ReidUnavailableError, default_encoder
from privacy_attack.report import (
    AttackConfig,
    AttackRun,
    attack_input_size,
    grid_columns,
    run_attacks,
    strongest,
    write_grid,
)
from privacy_attack.template import average_face
from privacy_attack.tradeoff import AP_DRAWS, accuracy, ap_text, held_out_sets, plot_tradeoff

NO_NOISE = "none"  # the baseline's name; "clean" is accepted for it too
NO_NOISE_ALIASES = (NO_NOISE, "clean")
GRID_ROWS = 6  # victims shown in a grid; only their reconstructions are kept


class AttackUnavailableError(FrostedError):
    """Re-identification needs dlib and its face models: the ``attack`` extra."""


class AttackDataError(FrostedError):
    """The shared data folder lacks the victims' or the attacker's photos."""


def require_reid() -> None:
    """Load dlib's face recogniser now, so a missing extra fails before minutes of attacking, not after."""
    try:
        default_encoder()
    except (ReidUnavailableError, ImportError) as exc:
        detail = " ".join(str(exc).split())
        raise AttackUnavailableError("re-identification needs dlib and its face models: install the attack "
                                     f"extra (pip install -e '.[attack]'); {detail}") from None


def load_profiles(detector: SplitDetector, names: list[str] | tuple[str, ...]) -> dict[str, NoiseProfile | None]:
    """The no-noise baseline (always, first) and each named profile (shipped name or file, checked against
    ``detector``'s weights and input size), by name; ``none``/``clean`` name the baseline."""
    profiles: dict[str, NoiseProfile | None] = {NO_NOISE: None}
    for name in names:
        if name not in NO_NOISE_ALIASES and name not in profiles:
            profiles[name] = load_profile_for(detector, name)
    return profiles


def _faces_dir(shared: Path, name: str) -> Path:
    folder = shared / "data" / "faces" / name
    if not folder.is_dir():
        raise AttackDataError(f"{folder}: not found; point --shared (or $FROSTED_SHARED) at the shared data "
                              "folder (the one holding data/faces/unlabelled and data/faces/mitcmu)")
    return folder


def load_victims(shared: Path, which: str = "all", limit: int | None = None
                 ) -> tuple[list[Photo], list[Photo] | None]:
    """(victims, gallery photos) for `run_attacks`: the unlabelled set's photos (``which="labelled"``: only
    those whose identity its pairs file states), only the first ``limit`` of them with a limit. Either way
    re-identification searches the labelled photos of the whole set: the gallery is None (the victims'
    own) when every photo is a victim, else those photos."""
    if which not in ("all", "labelled"):
        raise ValueError(f"victims: 'all' or 'labelled', not {which!r}")
    photos = read_unlabelled(_faces_dir(shared, "unlabelled"))
    if which == "labelled":
        photos = [photo for photo in photos if photo.labelled]
    victims = photos[:limit]
    return victims, None if len(victims) == len(photos) else [photo for photo in photos if photo.labelled]


def load_attacker(shared: Path) -> list[Photo]:
    """The attacker's public photos (`attacker_photos`), disjoint from the victims."""
    _faces_dir(shared, "mitcmu")
    return attacker_photos(shared)


def measure(detector: SplitDetector, profiles: dict[str, NoiseProfile | None], victims: list[Photo],
            attacker: list[Photo], config: AttackConfig = AttackConfig(),
            gallery_photos: list[Photo] | None = None, keep_images: int = GRID_ROWS) -> dict[str, AttackRun]:
    """`run_attacks` against each of ``profiles`` (None: no noise), by name. The decoder's bank of the
    attacker's clean activations is built once for all of them; each profile trains its own decoder.
    Reconstructions are kept for the first ``keep_images`` victims only (what a grid shows)."""
    size = attack_input_size(detector)
    bank = None
    if "decoder" in config.attacks:
        if not attacker:
            raise AttackDataError("the decoder attack needs the attacker's photos, and none were given")
        bank = build_bank(detector.model.head, attacker, size, config.decoder)
    template = average_face(detector, attacker, size)  # once: the boxes-only baseline ignores the noise
    runs = {}
    for name, profile in tqdm(profiles.items(), desc="noise profiles", unit="profile", leave=False,
                              disable=len(profiles) < 2):
        run = run_attacks(profile, victims, attacker, detector, config, bank=bank, gallery_photos=gallery_photos,
                          face_template=template)
        kept = [photo.key for photo in victims[:keep_images]]
        run.originals = {key: run.originals[key] for key in kept if key in run.originals}
        run.images = {attack: {k: {key: by_key[key] for key in kept if key in by_key} for k, by_key in by_k.items()}
                      for attack, by_k in run.images.items()}
        run.decoder = None  # each profile's decoder is a few MB, and nothing here reuses it
        runs[name] = run
    return runs


def measure_accuracy(detector: SplitDetector, profiles: dict[str, NoiseProfile | None], shared: Path,
                     limit: int | None = None) -> dict[str, dict]:
    """AP of each profile (with its noise-aware tail) on the face sets' photos that none of them was fitted
    on (the first ``limit`` of each set, with a limit), by name (`privacy_attack.tradeoff.accuracy`)."""
    sets = held_out_sets(shared, profiles, limit)
    if not sets:
        raise AttackDataError(f"{shared / 'data' / 'faces'}: no labelled face set (mitcmu, dlib) to measure AP on")
    return {name: accuracy(detector, profile, sets)
            for name, profile in tqdm(profiles.items(), desc="accuracy", unit="profile", leave=False)}


def write_report(out: Path, runs: dict[str, AttackRun], accuracies: dict[str, dict] | None = None,
                 **extra: object) -> dict:
    """``out/attack.json`` (``extra``, e.g. the settings, then every profile's results by name, with its AP
    when ``accuracies`` are given, and the grids' layout), per attack ``out/grid-<attack>.png``: original |
    no noise | each profile at its smallest and largest k, and with accuracies ``out/tradeoff.png``: AP
    against the strongest attack's face SSIM and re-identification. Returns what attack.json holds."""
    out.mkdir(parents=True, exist_ok=True)
    clean, noisy = runs[NO_NOISE], {name: run for name, run in runs.items() if name != NO_NOISE}
    grids = {}
    for attack in clean.images:
        path = write_grid(out / f"grid-{attack}.png", clean, noisy, attack, max_rows=GRID_ROWS)
        grids[attack] = {"file": path.name, "columns": [title for title, _ in grid_columns(clean, noisy, attack)],
                         "rows": list(clean.originals)[:GRID_ROWS]}
    profiles = {name: run.results for name, run in runs.items()}
    report = {**extra, "profiles": profiles, "grids": grids}
    if accuracies:
        for name, found in accuracies.items():
            profiles[name]["accuracy"] = found
        points = [{"name": name, "alpha": results["profile"]["alpha"] if results["profile"] else None,
                   "rank": results["profile"]["rank"] if results["profile"] else None,
                   "accuracy": results["accuracy"],
                   "strongest": {k: strongest(results["attacks"], k) for k in results["k_values"]}}
                  for name, results in profiles.items() if "accuracy" in results]
        report["tradeoff"] = plot_tradeoff(points, out / "tradeoff.png").name
    write_text(out / "attack.json", json.dumps(report, indent=1))
    return report


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.0%}"


def _reid(scores: dict, protocol: str) -> str:
    found = scores["reid"][protocol]
    return f"{_percent(found['rate'])} ({_percent(found['chance'])})"


def table(report: dict) -> str:
    """The report as a compact text table: one line per profile, k and attack."""
    profiles = report["profiles"]
    first = profiles[NO_NOISE]
    original, flat = first["baselines"]["original"], first["baselines"]["flat_mean_colour"]
    boxes = first["baselines"].get("boxes_only")
    width = max(len("profile"), *(len(name) for name in profiles))
    draws = max(results.get("draws", 1) for results in profiles.values())
    pooled = f"; each profile's scores pooled over {draws} noise draws" if draws > 1 else ""
    lines = [f"victims: {first['victims']} photos, {first['faces']} faces; re-identification gallery: "
             f"{first['gallery']['photos']} photos of {first['gallery']['identities']} people{pooled}",
             f"reference: the originals re-id other {_reid(original, 'other_photo')}, same "
             f"{_reid(original, 'same_photo')}; a flat mean-colour image re-id other {_reid(flat, 'other_photo')}, "
             f"same {_reid(flat, 'same_photo')}, face SSIM {_number(flat['face_ssim'], 3)}, "
             f"finds face {_percent(flat['detector_finds_face'])}",
             *([] if not boxes else [
                 f"the boxes-only guess (the attacker's average face painted into each face box the tail returns, "
                 f"over the mean colour): face SSIM {_number(boxes['face_ssim'], 3)}, re-id other "
                 f"{_reid(boxes, 'other_photo')}; an attack learns something about a face only above it"]),
             "",
             f"{'profile':<{width}} {'k':>3}  {'attack':<10} {'face SSIM':>9} {'face PSNR':>9} {'image SSIM':>10} "
             f"{'image PSNR':>10} {'re-id other':>11} {'re-id same':>11} {'finds face':>10}  stronger"]
    for name, results in profiles.items():
        stronger = results.get("stronger", {})
        for k in results["k_values"]:
            for attack, found in results["attacks"].items():
                scores = found[f"k={k}"]
                mark = "*" if stronger.get(f"k={k}") == attack else ""
                lines.append(f"{name:<{width}} {k:>3}  {attack:<10} {_number(scores['face_ssim'], 3):>9} "
                             f"{_number(scores['face_psnr'], 1):>9} {_number(scores['image_ssim'], 3):>10} "
                             f"{_number(scores['image_psnr'], 1):>10} {_reid(scores, 'other_photo'):>11} "
                             f"{_reid(scores, 'same_photo'):>11} {_percent(scores['detector_finds_face']):>10}  {mark}")
    other, same = original["reid"]["other_photo"]["queries"], original["reid"]["same_photo"]["queries"]
    lines += ["",
              f"re-id: the reconstruction's face (dlib) is nearest to a photo of the same person: another photo "
              f"of them (other, {other} victims have one) or any, the very photo included (same, {same} victims);",
              "(chance) what a random guess gets. finds face: the clean detector still finds the face in the "
              "reconstruction.",
              "* the stronger attack at that profile and k: more re-identified (other, then same), then higher "
              "face SSIM."]
    measured = {name: results["accuracy"] for name, results in profiles.items() if "accuracy" in results}
    if measured:
        lines += ["", "AP on photos no profile was fitted on (noise-aware tail where the profile has one; "
                      f"with noise, the mean [range] of {AP_DRAWS} noise draws):"]
        lines += [f"{name:<{width}} " + ", ".join(f"{set_name} AP@{found['iou']:g} {ap_text(found)} "
                                                  f"({found['images']} photos)" for set_name, found in sets.items())
                  for name, sets in measured.items()]
    return "\n".join(lines)

