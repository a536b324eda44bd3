"""The accuracy/privacy table: for clean and each shipped noise profile, AP on images no profile saw, and what
the strongest attack recovers from the noisy activations (face-crop SSIM, re-identification) at k = 1 and 30.

    FROSTED_WEIGHTS=... python bench/privacy_table.py [--alphas 0.2,0.6] [--decoder-seconds 120] ...

Protocol (the shipped profiles' fit, see the Makefile's `profiles`): fitted on MIT+CMU folds 1-5 by
distillation. AP@0.3 is pooled over MIT+CMU folds 6-10 (clean included) and AP@0.5 over dlib, both unseen by
fitting. Victims are the unlabelled photos (unseen by fitting; re-identification on those with identities);
the attacker trains its decoder on MIT+CMU photos and scikit-image's colour photos, knows the weights, mu and
sigma (`privacy_attack.measure`, the same measurement as `frosted attack`). "rotating" is the
k-frame-averaging defence (`facesplit.noise.rotating`, half the variance secret, rotated every 30 frames):
averaging 30 frames of one rotation leaves sigma * sqrt(0.5 + 0.5 / 30), which is what the attack then faces.
Writes privacy_table.md / .json, privacy_tradeoff.png (AP and privacy across alpha) and
privacy_ap_vs_attack.png (AP against what the attack recovers, as `frosted attack` plots it) under --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from facesplit.detector import load_detector
from facesplit.faceboxes import DEFAULT_SPLIT, SPLITS
from facesplit.noise.profile import split_of
from facesplit.noise.rotating import ROTATION_FRAMES, averaged_within_rotation
from facesplit.noise.shipped import shipped_profiles
from privacy_attack.decoder import DecoderConfig
from privacy_attack.inversion import InversionConfig
from privacy_attack.measure import load_attacker, load_profiles, load_victims, measure
from privacy_attack.report import AttackConfig, strongest
from privacy_attack.tradeoff import AP_DRAWS, accuracy, ap_text, held_out_sets, plot_tradeoff

TR4928_FDDB_AP = {None: 0.9337, 0.05: 0.903, 0.1: 0.902, 0.2: 0.908, 0.4: 0.907, 0.6: 0.885, 0.8: 0.884,
                  0.9: 0.846, 0.95: 0.846}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=SPLITS, default=DEFAULT_SPLIT,
                        help="the model split: its shipped profiles, and the table's file names (-SPLIT but for rdcl)")
    parser.add_argument("--alphas", default="all",
                        help="comma-separated shipped alphas or profile names (rank48-alpha-0.2), or 'all' (of the "
                             "split)")
    parser.add_argument("--decoder-seconds", type=float, default=120.0)
    parser.add_argument("--inversion-steps", type=int, default=InversionConfig().steps,
                        help="fewer understate the leak (see frosted attack --help)")
    parser.add_argument("--draws", type=int, default=1,
                        help="independent noise draws per victim and k, the scores pooled (each costs one more "
                             "inversion per victim and k)")
    parser.add_argument("--victims", choices=["all", "labelled"], default="all",
                        help="labelled: only the photos with a known identity (faster; re-id uses only those)")
    parser.add_argument("--shared", default=os.environ.get("FROSTED_SHARED", "../shared"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    started = time.perf_counter()
    detector = load_detector(split=args.split)
    names = [name for name, path in shipped_profiles().items() if split_of(path) == args.split]
    prefix = "alpha-" if args.split == DEFAULT_SPLIT else f"{args.split}-alpha-"
    if args.alphas != "all":
        names = [name if name in names else f"{prefix}{name}" for name in args.alphas.split(",")]
    profiles = load_profiles(detector, names)  # the no-noise baseline first
    victims, gallery = load_victims(shared, args.victims)
    attacker = load_attacker(shared)
    config = AttackConfig(k_values=(1, 30), decoder=DecoderConfig(train_seconds=args.decoder_seconds),
                          inversion=InversionConfig(steps=args.inversion_steps), draws=args.draws,
                          noise_seed=0)  # the same victim draws every run, so tables compare
    attacked = measure(detector, profiles, victims, attacker, config, gallery, keep_images=0)
    rotating = {name: averaged_within_rotation(profile, ROTATION_FRAMES) for name, profile in profiles.items()
                if profile is not None}
    defended = measure(detector, rotating, victims, attacker, replace(config, k_values=(1,)), gallery,
                       keep_images=0) if rotating else {}
    sets = held_out_sets(shared, profiles)  # MIT+CMU folds 6-10 (the shipped profiles saw 1-5) and dlib
    rows = []
    for name, profile in profiles.items():
        found = accuracy(detector, profile, sets)
        row: dict = {"profile": "clean" if profile is None else name,
                     "alpha": None if profile is None else profile.alpha,
                     "rank": None if profile is None else profile.rank,
                     "dct": profile is not None and profile.dct,
                     "mean_sigma": None if profile is None else float(profile.sigma.mean()),
                     "mitcmu_heldout_ap30": found["mitcmu"]["ap"], "dlib_ap50": found["dlib"]["ap"],
                     "accuracy": found}
        attacks = attacked[name].results["attacks"]
        row["k1"] = strongest(attacks, 1)
        row["k30"] = strongest(attacks, 30) if profile is not None else row["k1"]
        if profile is not None:
            row["k30_rotating"] = strongest(defended[name].results["attacks"], 1)
        # TR-4928's noise was per element: its figure stands beside the per-channel grid only
        row["tr4928_fddb_ap"] = TR4928_FDDB_AP.get(row["alpha"]) if row["rank"] is None else None
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
    found = attacked[next(iter(profiles))].results["baselines"]  # the same for every profile: no noise in them
    baselines = {name: {"face_ssim": found[name]["face_ssim"], "reid_other_photo": found[name]["reid"]["other_photo"]}
                 for name in ("flat_mean_colour", "boxes_only") if found.get(name)}
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.split == DEFAULT_SPLIT else f"-{args.split}"
    (out / f"privacy_table{suffix}.json").write_text(json.dumps(
        {"rows": rows, "baselines": baselines, "settings": vars(args),
         "wall_s": round(time.perf_counter() - started)}, indent=1))
    table = markdown(rows, baselines, args.draws, args.inversion_steps, args.decoder_seconds, args.split)
    (out / f"privacy_table{suffix}.md").write_text(table)
    plot(rows, baselines, out / f"privacy_tradeoff{suffix}.png")
    plot_tradeoff([{"name": r["profile"], "alpha": r["alpha"], "rank": r["rank"], "accuracy": r["accuracy"],
                    "strongest": {1: r["k1"], 30: r["k30"]}} for r in rows], out / f"privacy_ap_vs_attack{suffix}.png")
    print(table)


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def reid(cell: dict | None) -> str:
    if not cell:
        return "—"
    r = cell["reid_other_photo"]
    interval = f" [{r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}]" if r.get("ci95") else ""
    return f"{r['rate']:.0%}{interval} (chance {r['chance']:.0%})"


def markdown(rows: list[dict], baselines: dict, draws: int = 1, inversion_steps: int | None = None,
             decoder_seconds: float | None = None, split: str = DEFAULT_SPLIT) -> str:
    lines = [f"Model split: {split} (the head the edge runs ends there; the profiles were fitted for it).", "",
             "| profile | alpha | noise on | mean sigma | AP@0.3 MIT+CMU 6-10 | AP@0.5 dlib | TR-4928 FDDB AP | "
             "face SSIM k=1 | re-id k=1 | face SSIM k=30 | re-id k=30 | face SSIM k=30 rotating | "
             "re-id k=30 rotating |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rot = r.get("k30_rotating")
        where = "—" if r["alpha"] is None else f"{r['rank']} directions" if r["rank"] else "every channel"
        where += " x frequencies" if r.get("dct") else ""
        lines.append(f"| {r['profile']} | {fmt(r['alpha'], 2)} | {where} | {fmt(r['mean_sigma'], 2)} | "
                     f"{ap_text(r['accuracy']['mitcmu'])} | {ap_text(r['accuracy']['dlib'])} | "
                     f"{fmt(r['tr4928_fddb_ap'], 4)} | "
                     f"{fmt(r['k1']['face_ssim'])} | {reid(r['k1'])} | {fmt(r['k30']['face_ssim'])} | "
                     f"{reid(r['k30'])} | {fmt(rot['face_ssim']) if rot else '—'} | {reid(rot)} |")
    queries = rows[0]["k1"]["reid_other_photo"]["queries"]
    pooled = f", pooled over {draws} noise draws of each" if draws > 1 else ""
    lines += ["", f"Face SSIM and re-id: the stronger of the two attacks. Re-id: share of the {queries} victims with "
              f"another photo of themselves whose reconstruction dlib matches to that person{pooled} [95 % Wilson "
              f"interval on {queries} people] (what a random guess gets). AP with noise: the mean [range] over "
              f"{AP_DRAWS} noise draws. The bar: AP within 1.5 points of clean, face SSIM <= 0.30, re-id <= 2x "
              "chance at k=1."]
    flat, boxes = baselines.get("flat_mean_colour"), baselines.get("boxes_only")
    if flat and boxes:
        lines.append(f"Baselines on the same victims: a flat image of the photo's mean colour scores face SSIM "
                     f"{fmt(flat['face_ssim'])}, re-id {reid(flat)}; the boxes-only guess (the attacker's average "
                     f"face painted into each face box, which the tail returns by design) {fmt(boxes['face_ssim'])}, "
                     f"re-id {reid(boxes)}. No profile that keeps faces detectable can hold an attacker below the "
                     "boxes-only guess, so read face SSIM against it: above it, an attack learned something "
                     "about a face.")
    if inversion_steps is not None:
        lines.append(f"Attack budget: {inversion_steps} inversion steps per victim and k, the decoder trained "
                     f"{decoder_seconds:g} s per profile; a bigger budget recovers more, so these are lower bounds.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], baselines: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy = [r for r in rows if r["alpha"] is not None and r["rank"] is None]  # the per-channel alpha grid
    alphas = [r["alpha"] for r in noisy]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(alphas, [r["mitcmu_heldout_ap30"] for r in noisy], "o-", label="AP@0.3 MIT+CMU held-out")
    left.plot(alphas, [r["dlib_ap50"] for r in noisy], "s-", label="AP@0.5 dlib")
    left.plot(alphas, [r["tr4928_fddb_ap"] for r in noisy], "x--", label="TR-4928 FDDB AP")
    left.axhline(rows[0]["mitcmu_heldout_ap30"], color="grey", lw=0.8, ls=":", label="clean MIT+CMU")
    left.set(xlabel="alpha", ylabel="AP", title="Accuracy")
    left.legend(fontsize=8)
    for k, style in (("k1", "o-"), ("k30", "s--")):
        right.plot(alphas, [r[k]["face_ssim"] for r in noisy], style, label=f"face SSIM, {k}")
        right.plot(alphas, [r[k]["reid_other_photo"]["rate"] for r in noisy], style, alpha=0.5,
                   label=f"re-id rate, {k}")
    right.axhline(0.30, color="red", lw=0.8, ls=":", label="SSIM target 0.30")
    if baselines.get("boxes_only"):
        right.axhline(baselines["boxes_only"]["face_ssim"], color="black", lw=0.8, ls="--",
                      label="face SSIM of the boxes-only guess")
    right.set(xlabel="alpha", ylabel="strongest attack", title="What the attacker recovers")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    np.seterr(all="ignore")
    main()
