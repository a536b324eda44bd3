"""The privacy table at camera scale: every split, its profiles and noise conditions, each face size; AP beside
identity; Markdown, JSON, a plot of AP against rank-1 and TAR, and a grid of decoded faces per split.

`frosted attack --victims DIR` and bench/privacy_scale.py both run `run_table`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from facesplit.detector import SplitDetector, at_split
from facesplit.faceboxes import SPLITS
from facesplit.noise import DEFAULT_PROFILE
from facesplit.noise.profile import split_of
from facesplit.noise.shipped import load_profile_for, shipped_profiles
from facesplit.outputs import write_text
from privacy_attack.at_scale import ScaleConfig, as_image, measure_split, prepare_scale, rank1_key, victims_from
from privacy_attack.crops import head_splits
from privacy_attack.descriptors import describe
from privacy_attack.identity import GALLERY_SIZE, gallery_for
from privacy_attack.people import FacePhoto, check_disjoint
from privacy_attack.scene import Backgrounds

CLEAN = "clean"
GRID_ROWS = 6
TARGET = {"ap_points": 1.5, "rank1_100": 0.02, "rank1_100_upper": 0.03, "tar": 0.03, "ssim_over_boxes": 0.02}


@dataclass(frozen=True)
class TablePlan:
    """What to attack: ``profiles`` per split (clean is always added); every profile at ``full_scales``, only
    clean and the ``focus`` profiles at the other scales; the focus profiles (and clean) get the costly
    attacks too."""

    profiles: dict[str, tuple[str, ...]]
    full_scales: tuple[int, ...] = (96,)
    focus: tuple[str, ...] = ()


def shipped_plan(splits: Sequence[str] = SPLITS, focus: tuple[str, ...] = (DEFAULT_PROFILE, "alpha-0.4"),
                 full_scales: tuple[int, ...] = (96,)) -> TablePlan:
    """Every shipped profile at its own split."""
    by_split: dict[str, list[str]] = {split: [] for split in splits}
    for name, path in shipped_profiles().items():
        split = split_of(path)
        if split in by_split:
            by_split[split].append(name)
    return TablePlan({split: tuple(names) for split, names in by_split.items()}, full_scales, focus)


def display_name(name: str) -> str:
    """A shipped profile's name, or a profile file's stem: table labels are "<name>/<noise>"."""
    return Path(name).stem if name.endswith(".safetensors") else name


def with_files(plan: TablePlan, files: Sequence[str]) -> TablePlan:
    """``plan`` with profile files added at their own split, as focus profiles."""
    profiles = {split: list(names) for split, names in plan.profiles.items()}
    for file in files:
        profiles.setdefault(split_of(Path(file)), []).append(file)
    return TablePlan({split: tuple(names) for split, names in profiles.items()}, plan.full_scales,
                     (*plan.focus, *files))


@dataclass
class TableInputs:
    victims: list[FacePhoto]
    attacker: list[FacePhoto]
    backgrounds: Backgrounds
    accuracy_from: Path | None = None  # a shared folder: AP on its face sets' photos no profile was fitted on
    accuracy_limit: int | None = None  # only the first N of each set (quick runs)


def _deepest(splits: Sequence[str]) -> str:
    return max(splits, key=SPLITS.index)


def run_table(detector: SplitDetector, inputs: TableInputs, plan: TablePlan, config: ScaleConfig,
              settings: dict | None = None, checkpoint: Callable[[dict], None] | None = None,
              head: nn.Module | None = None) -> dict:
    """Attack every profile of ``plan`` at every scale of ``config``: a JSON-able dict (and decoded faces of
    the first victims under ``"_grid"``, for `write_outputs`). AP comes first, then one scale at a time;
    ``checkpoint`` sees the report as it grows (a long run keeps what it measured). ``head``: what the frames go
    through (default: ``detector``'s torch head, to the plan's deepest split; a
    `privacy_attack.runtime_head.RuntimeHead` for a compiled one, at the plan's splits)."""
    started = time.monotonic()
    check_disjoint(inputs.victims, inputs.attacker)
    if head is None:
        head = at_split(detector, _deepest(list(plan.profiles))).model.head
    missing = set(plan.profiles) - set(head_splits(head))
    if missing:
        raise ValueError(f"the head gives splits {', '.join(head_splits(head))}, not {', '.join(sorted(missing))}")
    described_victims = describe(inputs.victims, progress=config.progress, desc="victims: dlib")
    described_attacker = describe(inputs.attacker, progress=config.progress, desc="attacker: dlib")
    victims = victims_from(described_victims)
    profiles = {split: {CLEAN: None, **{display_name(name): load_profile_for(at_split(detector, split), name)
                                        for name in names}}
                for split, names in plan.profiles.items()}
    focus = {display_name(name) for name in plan.focus}
    report: dict = {"settings": {**(settings or {}), "config": asdict(config), "plan": asdict(plan)},
                    "data": {"victim_photos": len(inputs.victims), "victim_photos_with_face": len(described_victims),
                             "people": len(victims.people), "queries": len(victims.queries),
                             "attacker_photos": len(inputs.attacker),
                             "attacker_faces": len(described_attacker)},
                    "scales": {}, "accuracy": {}}
    if inputs.accuracy_from is not None:
        from privacy_attack.tradeoff import accuracy, held_out_sets

        every = {f"{split}/{name}": p for split, by_name in profiles.items() for name, p in by_name.items()}
        sets = held_out_sets(inputs.accuracy_from, every, inputs.accuracy_limit)  # the same photos for every profile
        for split, by_name in profiles.items():
            report["accuracy"][split] = {name: accuracy(at_split(detector, split), profile, sets)
                                         for name, profile in by_name.items()}
    grid: dict = {}
    report["_grid"] = grid
    for side in config.scales:
        full = side in plan.full_scales
        data = prepare_scale(head, side, described_attacker, victims, inputs.backgrounds, config,
                             placements=None if full else 1)
        at_side: dict = {"baselines": data.baselines, "cells": next(iter(data.victims.values())).cells,
                         "splits": {}}
        shown = min(GRID_ROWS, len(victims.queries))
        grid[side] = {"original": [as_image(next(iter(data.victims.values())).faces[i]) for i in range(shown)],
                      "boxes only": [data.template] * shown}
        for split, by_name in profiles.items():
            chosen = by_name if full else {name: p for name, p in by_name.items() if name == CLEAN or name in focus}
            found = measure_split(data, split, chosen, victims, config, focus)
            for label, results in found.items():
                decoded = results.pop("_decoded", None)
                if decoded is not None and (label == "clean/clean" or label.endswith("/k=1")):
                    grid[side][f"{split} {label.removesuffix('/clean').removesuffix('/k=1')}"] = decoded[:shown]
            at_side["splits"][split] = found
        report["scales"][str(side)] = at_side
        if checkpoint is not None:
            report["wall_time_s"] = round(time.monotonic() - started, 1)
            checkpoint(report)
    report["wall_time_s"] = round(time.monotonic() - started, 1)
    return report


def _pct(found: dict | None) -> str:
    if not found:
        return "—"
    low, high = found["ci95"] or (math.nan, math.nan)
    return f"{found['rate']:.1%} [{low:.1%}-{high:.1%}]"


def _ap(report: dict, split: str, name: str, set_name: str) -> str:
    found = report["accuracy"].get(split, {}).get(name, {}).get(set_name)
    return "—" if not found else f"{found['ap']:.3f}"


def _best(results: dict) -> tuple[str | None, dict | None]:
    name = results.get("strongest")
    return name, (results[name] if name else None)


def _references(base: dict) -> str:
    colour, thumbnail = base.get("knowing_colour_and_contrast"), base.get("knowing_a_4x4_thumbnail")
    if not colour or not thumbnail:
        return ""
    return (f" References that know each face but not who it is: its colour and contrast face SSIM "
            f"{colour['face_ssim']:.3f}, its 4x4 thumbnail {thumbnail['face_ssim']:.3f}.")


def markdown(report: dict) -> str:
    """The table: one row per scale, split, profile and condition, the strongest identity attack's figures
    and the face decoder's SSIM; the baselines of each scale above its rows."""
    data = report["data"]
    gallery = gallery_for(data["people"])  # a site with fewer people than 100 has no gallery of 100
    among = (f"Rank-1 among {gallery} people (chance {1 / gallery:.0%}) and among all {data['people']} (chance "
             f"{1 / data['people']:.1%})" if gallery < data["people"] else
             f"Rank-1 among all {data['people']} people (chance {1 / gallery:.1%}; fewer than {GALLERY_SIZE}, so no "
             f"gallery of {GALLERY_SIZE}: both rank-1 columns are this one)")
    lines = [f"Victims: {data['people']} people, {data['queries']} query photos (gallery: one clean photo each); "
             f"attacker: {data['attacker_faces']} faces. {among}; TAR at FAR 1 %; 95 % Wilson intervals on the "
             f"queries. Strongest of the identity attacks by rank-1 among {gallery}.", ""]
    for side, at_side in report["scales"].items():
        base = at_side["baselines"]
        key = rank1_key(base["original_photo"])
        lines += [f"### Faces of {side} px at the model input (a {at_side['cells']}x{at_side['cells']}-cell crop)",
                  "",
                  f"Ceilings: dlib on the original photos rank-1 {_pct(base['original_photo'][key])}, TAR "
                  f"{_pct(base['original_photo']['tar_at_far'])}; dlib on the frame's face rank-1 "
                  f"{_pct(base['frame'][key])}. Floors: boxes-only guess face SSIM "
                  f"{base['boxes_only']['face_ssim']:.3f} (32 px {base['boxes_only']['face_ssim_32']:.3f}), rank-1 "
                  f"{_pct(base['boxes_only'][key])}; flat image face SSIM {base['flat']['face_ssim']:.3f}, rank-1 "
                  f"{_pct(base['flat'][key])}.{_references(base)}", "",
                  f"| split | profile | noise | AP@0.3 MIT+CMU | AP@0.5 dlib | strongest | rank-1 / {gallery} "
                  f"| rank-1 / all | TAR @ FAR 1 % | linear probe rank-1 / {gallery} | face decoder SSIM (32 px) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for split, found in at_side["splits"].items():
            for label, results in found.items():
                name, condition = label.split("/", 1)
                attack, best = _best(results)
                decoder = results.get("face_decoder")
                ssim = "—" if not decoder else f"{decoder['face_ssim']:.3f} ({decoder['face_ssim_32']:.3f})"
                lines.append(f"| {split} | {name} | {condition} | {_ap(report, split, name, 'mitcmu')} | "
                             f"{_ap(report, split, name, 'dlib')} | {attack or '—'} | "
                             f"{_pct(best[rank1_key(best)]) if best else '—'} | "
                             f"{_pct(best['rank1_all']) if best else '—'} | "
                             f"{_pct(best['tar_at_far']) if best else '—'} | "
                             f"{_pct(results['probe_linear'][rank1_key(results['probe_linear'])])} | {ssim} |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(report: dict, out: Path, stem: str) -> list[Path]:
    """``stem``.json, ``stem``.md, ``stem``.png (AP against rank-1 and TAR) and ``stem``-grid.png."""
    out.mkdir(parents=True, exist_ok=True)
    grid = report.get("_grid", {})
    report = {key: value for key, value in report.items() if key != "_grid"}
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    write_text(paths[0], json.dumps(report, indent=1))
    write_text(paths[1], markdown(report) + "\n")
    if report["accuracy"]:
        paths.append(plot_ap_against_identity(report, out / f"{stem}.png"))
    if grid:
        paths.append(write_face_grid(grid, out / f"{stem}-grid.png"))
    return paths


def plot_ap_against_identity(report: dict, path: Path, side: str = "96") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at_side = report["scales"].get(side) or next(iter(report["scales"].values()))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    gallery = gallery_for(report["data"]["people"])
    for ax, metric, label in ((axes[0], "rank1", f"rank-1 among {gallery} (strongest attack)"),
                              (axes[1], "tar_at_far", "TAR at FAR 1 % (strongest attack)")):
        for split, found in at_side["splits"].items():
            xs, ys, names = [], [], []
            for label_, results in found.items():
                name, condition = label_.split("/", 1)
                if condition not in ("clean", "k=1"):
                    continue
                accuracy = report["accuracy"].get(split, {}).get(name, {}).get("mitcmu")
                _, best = _best(results)
                if accuracy is None or best is None:
                    continue
                xs.append(best[rank1_key(best)]["rate"] if metric == "rank1" else best[metric]["rate"])
                ys.append(accuracy["ap"])
                names.append(name)
            ax.plot(xs, ys, "o", label=split)
            for x, y, name in zip(xs, ys, names, strict=True):
                ax.annotate(name.removeprefix(f"{split}-"), (x, y), fontsize=6, textcoords="offset points",
                            xytext=(3, 2))
        ax.axvline(TARGET["rank1_100"] if metric == "rank1" else TARGET["tar"], color="red", lw=0.8, ls="--",
                   label="target")
        ax.axvline(0.01, color="grey", lw=0.8, ls=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    clean = report["accuracy"].get(SPLITS[-1], {}).get(CLEAN, {}).get("mitcmu")
    if clean is not None:
        for ax in axes:
            ax.axhline(clean["ap"] - TARGET["ap_points"] / 100, color="green", lw=0.8, ls="--",
                       label="clean AP - 1.5 points")
    axes[0].set_ylabel("AP@0.3, MIT+CMU folds 6-10")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"AP against identity, faces of {side} px, k = 1 (lower x is more private)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_face_grid(grid: dict, path: Path) -> Path:
    """One block per scale: victims as rows; the original face, the boxes-only guess, and the face decoder's
    output per split (clean and each profile at k = 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(grid.items())
    columns = max(len(columns) for _, columns in blocks)
    rows = sum(len(next(iter(columns.values()))) for _, columns in blocks)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.3 * rows), squeeze=False)
    row = 0
    for side, by_title in blocks:
        count = len(next(iter(by_title.values())))
        for r in range(count):
            for c in range(columns):
                ax = axes[row + r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(by_title):
                    ax.axis("off")
                    continue
                title, images = list(by_title.items())[c]
                ax.imshow(images[r][:, :, ::-1])
                if r == 0:
                    ax.set_title(title, fontsize=5)
            axes[row + r][0].set_ylabel(f"{side} px", fontsize=6)
        row += count
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
