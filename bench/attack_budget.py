"""Attack budget: what a 10-30x bigger attack recovers, at each model split, on a GPU in minutes.

The privacy table's attacks run on 2 CPU cores, so their budgets are small (100 inversion steps, a decoder
trained for 40 s), and session 6 found that a small budget understates the leak. This script reruns the
attacks with far larger budgets, batched over the victims on any device, so that a privacy claim rests on
an attack that has converged. Two steps, because a GPU machine need not have dlib (re-identification):

    python bench/attack_budget.py reconstruct --device cuda --out DIR   # the attacks -> DIR/reconstructions-*.npz
    python bench/attack_budget.py score DIR                             # face SSIM, dlib re-id -> bench/results/

``reconstruct`` needs the weights, the shipped or named profiles and the shared faces (victims: the labelled
unlabelled-set photos; the decoder's training photos: MIT+CMU and scikit-image's colour photos, as in
`frosted attack`). It runs the plan's attacks in order until ``--seconds`` is spent, saving after each, so a
run cut short keeps what it finished. The noisy observation of a k-frame average is drawn as
``a + mu + sigma / sqrt(k) * eps`` with torch's generator: the distribution the edge's stream gives (the
attacker gains nothing from the stream itself, see `privacy_attack.decoder.noisy_batch`).
Reconstructions are stored at 256x256 (inversion optimises a 128x128 image; the decoder outputs 256x256),
and ``score`` enlarges them back to the model input before scoring them exactly as `frosted attack` does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from facesplit.detector import SplitDetector, load_detector
from facesplit.noise.profile import NoiseProfile
from facesplit.noise.rotating import averaged_within_rotation
from facesplit.noise.shipped import load_profile_for
from privacy_attack.canvas import image_to_input, resize, to_canvas
from privacy_attack.datasets import attacker_photos, read_unlabelled
from privacy_attack.decoder import DecoderConfig, TrainingBank, build_bank, decode, noisy_batch, train_decoder
from privacy_attack.inversion import InversionConfig, invert_batch

INPUT = (1024, 1024)
STORED_SIDE = 256
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Attack:
    split: str
    profile: str | None  # None: no noise
    attack: str  # "inversion" | "decoder"
    k: int = 1
    steps: int = 0  # inversion
    tv_weight: float = 0.3  # inversion
    seconds: float = 0.0  # decoder training
    rotating: bool = False  # the k frames share one draw of the rotating defence's secret part

    @property
    def name(self) -> str:
        noise = Path(self.profile).name.removesuffix(".safetensors") if self.profile else "none"
        budget = f"{self.steps} steps tv {self.tv_weight:g}" if self.attack == "inversion" else f"{self.seconds:g} s"
        rotating = " rotating" if self.rotating else ""
        return f"{self.split} | {noise} | k={self.k}{rotating} | {self.attack} {budget}"


# The TV weights with noise are relative to the inversion's scaled data term (`privacy_attack.inversion`). The
# recorded run (bench/results/attack_budget.*) predates that scaling and weighed the data term by 1/s^2; its
# weights, divided by mean(1/s^2) of its profile and k, are the ones below (raw 3, 30, 300 and 10, 30 at
# inception3-alpha-0.4; raw 0.3 at alpha-0.4), so a rerun repeats it.
def default_plan(profile_rdcl: str, profile_deep: str) -> list[Attack]:
    """Most telling first (a run cut short keeps those): the CPU budgets, whose figures must come back or the
    pipeline is off; then 16x the inversion steps and a GPU-trained decoder at each split, with and without
    noise; then other TV weights and 64x."""
    deep = "inception3"
    return [
        Attack("rdcl", None, "inversion", steps=100, tv_weight=0.3),
        Attack(deep, None, "inversion", steps=100, tv_weight=3.0),
        Attack(deep, None, "inversion", steps=1600, tv_weight=3.0),
        Attack("rdcl", None, "inversion", steps=1600, tv_weight=0.3),
        Attack(deep, None, "decoder", seconds=60),
        Attack(deep, profile_deep, "inversion", k=1, steps=1600, tv_weight=0.23),
        Attack(deep, profile_deep, "inversion", k=30, steps=1600, tv_weight=0.0077),
        Attack(deep, None, "inversion", steps=1600, tv_weight=1.0),
        Attack(deep, None, "inversion", steps=1600, tv_weight=10.0),
        Attack("rdcl", None, "decoder", seconds=60),
        Attack("rdcl", profile_rdcl, "inversion", k=1, steps=1600, tv_weight=0.0069),
        Attack(deep, None, "inversion", steps=6400, tv_weight=3.0),
        Attack("rdcl", None, "inversion", steps=6400, tv_weight=0.3),
    ]


def noise_plan(profile_rdcl: str, profile_deep: str) -> list[Attack]:
    """The attacks on the noisy profiles that the first plan left out or mistuned: the GPU-trained decoder,
    and inversion with the TV weight swept (its data term weighs k / sigma^2, so a k=30 average wants a TV
    weight ~30x that of one frame; the first plan's k=30 figure kept TV 3 and came back as speckle: that is
    why the inversion now scales its data term)."""
    deep = "inception3"
    return [
        Attack(deep, profile_deep, "decoder", k=1, seconds=60),
        Attack(deep, profile_deep, "inversion", k=30, steps=1600, tv_weight=0.077),
        Attack(deep, profile_deep, "inversion", k=30, steps=1600, tv_weight=0.77),
        Attack(deep, profile_deep, "inversion", k=1, steps=1600, tv_weight=0.77),
        Attack(deep, profile_deep, "inversion", k=1, steps=1600, tv_weight=2.3),
        Attack("rdcl", profile_rdcl, "decoder", k=1, seconds=60),
    ]


def converged_plan(profile_rdcl: str, profile_deep: str) -> list[Attack]:
    """The GPU decoder against the noisy profiles at the no-noise decoder's budget (~15 000 steps): the noise
    plan's decoder drew its noise on the CPU and managed ~2 000 steps in the same minute."""
    deep = "inception3"
    return [
        Attack(deep, profile_deep, "decoder", k=1, seconds=60),
        Attack(deep, profile_deep, "decoder", k=30, seconds=60),
        Attack("rdcl", profile_rdcl, "decoder", k=1, seconds=60),
    ]


def averaging_plan(profile_rdcl: str, profile_deep: str) -> list[Attack]:
    """A static scene: the decoder on 30-frame averages, against the rotating defence and with twice the
    training (does the converged plan's k=30 figure still climb?)."""
    deep = "inception3"
    return [
        Attack(deep, profile_deep, "decoder", k=30, seconds=60, rotating=True),
        Attack(deep, profile_deep, "decoder", k=30, seconds=120),
    ]


PLANS = {"budget": default_plan, "noise": noise_plan, "converged": converged_plan, "averaging": averaging_plan}


def _victim_images(shared: Path) -> dict[str, np.ndarray]:
    photos = [p for p in read_unlabelled(shared / "data" / "faces" / "unlabelled") if p.labelled]
    return {p.key: to_canvas(p.image, INPUT).image for p in photos}


def _observe(head: torch.nn.Module, canvases: dict[str, np.ndarray], profile: NoiseProfile | None, k: int,
             device: torch.device, seed: int) -> torch.Tensor:
    with torch.no_grad():
        clean = torch.cat([head(image_to_input(c).to(device).contiguous(memory_format=torch.channels_last))
                           for c in canvases.values()]).float()
    if profile is None:
        return clean
    generator = torch.Generator().manual_seed(seed)
    profile = profile.to(device)
    return noisy_batch(clean, profile, (k,), generator) + profile.expand(profile.mu[None])


def _stored(image: np.ndarray) -> np.ndarray:
    return resize(image, STORED_SIDE, STORED_SIDE)


def reconstruct(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its fastest kernels
    shared = Path(args.shared)
    canvases = _victim_images(shared)
    plan = [replace(a, steps=max(1, round(a.steps * args.scale)) if a.steps else 0, seconds=a.seconds * args.scale)
            for a in PLANS[args.plan](args.profile_rdcl, args.profile_deep)][:args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    detectors: dict[str, SplitDetector] = {}
    banks: dict[str, TrainingBank] = {}  # the attacker's clean activations depend on the split alone
    started = time.monotonic()
    for index, attack in enumerate(plan):
        if time.monotonic() - started > args.seconds:
            print(f"out of time: skipping {attack.name}", flush=True)
            continue
        detector = detectors.get(attack.split) or load_detector(split=attack.split)
        detectors[attack.split] = detector
        head = detector.model.head.to(device)
        profile = None if attack.profile is None else load_profile_for(detector, attack.profile)
        k = attack.k
        if attack.rotating and profile is not None:  # k frames of one rotation: one draw at the residual sigma
            profile, k = averaged_within_rotation(profile, attack.k), 1
        z = _observe(head, canvases, profile, k, device, seed=index)
        t0 = time.monotonic()
        if attack.attack == "inversion":
            std = None if profile is None else (profile.sigma / math.sqrt(k)).to(device)
            images = invert_batch(head, z, profile, std, INPUT,
                                  InversionConfig(steps=attack.steps, tv_weight=attack.tv_weight, progress=True))
            detail: dict = {}
        else:
            config = DecoderConfig(train_seconds=attack.seconds, batch_size=32, views_per_photo=8,
                                   k_values=(k,), progress=True)
            bank = banks.get(attack.split) or build_bank(head, attacker_photos(shared)[:args.attacker_limit], INPUT,
                                                         config)
            banks[attack.split] = bank
            decoder, log = train_decoder(bank, profile, config)
            images = np.stack([decode(decoder, z[i:i + 1], profile, INPUT) for i in range(len(z))])
            detail = {"decoder_steps": log.steps, "bank_views": len(bank),
                      "last_loss": float(np.mean(log.losses[-50:]))}
            del decoder
        seconds = time.monotonic() - t0
        # two runs a file: a file of 36 incompressible 256x256 images is 7 MB, and few files come back
        file = f"reconstructions-{args.plan}-{index // 2}.npz"
        stored = dict(np.load(out / file)) if (out / file).exists() else {}
        for victim, image in zip(canvases, images, strict=True):
            stored[f"run{index}/{victim}"] = _stored(image)
        np.savez_compressed(out / file, **stored)
        runs.append({"key": f"run{index}", "plan": args.plan, "file": file, "name": attack.name, **asdict(attack),
                     "wall_seconds": round(seconds, 1),
                     "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", **detail})
        print(f"{attack.name}: {seconds:.1f} s", flush=True)
        (out / f"runs-{args.plan}.json").write_text(json.dumps(runs, indent=1))


COARSE_SIDE = 32  # face crops compared at this side too: what a reconstruction gets right at a glance


def coarse_face_ssim(victims: list, reconstructions: dict[str, np.ndarray]) -> float:
    """Mean face-crop SSIM with the crops shrunk to COARSE_SIDE: pose, light and outline, not detail."""
    from privacy_attack.metrics import face_similarities

    return float(np.mean([s.ssim for v in victims for s in face_similarities(
        v.canvas.image, reconstructions[v.photo.key], v.faces, side=COARSE_SIDE)]))


def score_runs(args: argparse.Namespace) -> None:
    from privacy_attack.canvas import flat_canvas
    from privacy_attack.scoring import build_gallery, prepare_victims, score
    from privacy_attack.template import average_face, paint_faces

    folder, out = Path(args.folder), Path(args.out)
    runs = [run for path in sorted(folder.glob("runs-*.json")) for run in json.loads(path.read_text())]
    runs.sort(key=lambda run: list(PLANS).index(run["plan"]))  # the order the plans were written in (stable)
    files = {run["file"]: np.load(folder / run["file"]) for run in runs}
    shared = Path(args.shared)
    detector = load_detector()
    photos = [p for p in read_unlabelled(shared / "data" / "faces" / "unlabelled") if p.labelled]
    victims = prepare_victims(detector, photos, INPUT)
    gallery = build_gallery(victims)
    flats = {v.photo.key: flat_canvas(v.canvas) for v in victims}
    flat = score(detector, victims, flats, gallery)
    face = average_face(detector, attacker_photos(shared), INPUT)
    if face is None:
        raise SystemExit(f"{shared}: the attacker's photos (MIT+CMU, scikit-image) hold no face to average")
    guesses = {v.photo.key: paint_faces(v.canvas, v.faces, face) for v in victims}
    boxes = score(detector, victims, guesses, gallery)
    baselines = {"flat_mean_colour_face_ssim": flat["face_ssim"], "boxes_only_face_ssim": boxes["face_ssim"],
                 "boxes_only_reid_other_hits": len(boxes["reid"]["other_photo"]["hits"]),
                 "flat_mean_colour_face_ssim_coarse": coarse_face_ssim(victims, flats),
                 "boxes_only_face_ssim_coarse": coarse_face_ssim(victims, guesses)}
    print(f"baselines: flat mean colour face SSIM {flat['face_ssim']:.3f}; boxes only {boxes['face_ssim']:.3f}, "
          f"re-id other {baselines['boxes_only_reid_other_hits']}/{boxes['reid']['other_photo']['queries']}")
    rows = []
    for run in runs:
        stored = files[run["file"]]
        recon = {v.photo.key: resize(stored[f"{run['key']}/{v.photo.key}"], *INPUT) for v in victims}
        found = score(detector, victims, recon, gallery)
        other = found["reid"]["other_photo"]
        rows.append({**run, "face_ssim": found["face_ssim"], "face_ssim_coarse": coarse_face_ssim(victims, recon),
                     "image_ssim": found["image_ssim"],
                     "reid_other": other["rate"], "reid_other_hits": len(other["hits"]),
                     "reid_other_queries": other["queries"], "reid_chance": other["chance"],
                     "finds_face": found["detector_finds_face"]})
        print(f"{run['name']:<60} face SSIM {found['face_ssim']:.3f}  re-id other "
              f"{len(other['hits'])}/{other['queries']}", flush=True)
    # the rows of plans this folder does not hold stay, from the last scoring: a device run is one plan at a time
    previous = out / "attack_budget.json"
    scored = {run["plan"] for run in runs}
    kept = [r for r in json.loads(previous.read_text())["runs"] if r["plan"] not in scored] if previous.exists() else []
    rows = sorted(kept + rows, key=lambda row: list(PLANS).index(row["plan"]))
    out.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps({**baselines, "runs": rows}, indent=1))
    (out / "attack_budget.md").write_text(markdown(rows, baselines))
    plot(rows, baselines, out / "attack_budget.png")
    print(markdown(rows, baselines))


def plot(rows: list[dict], baselines: dict, path: Path) -> None:
    """Face SSIM against re-identification, one point per attack, by split; the issue's bars dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for split, marker in (("rdcl", "o"), ("inception3", "s")):
        for noisy, colour in ((False, "tab:red"), (True, "tab:blue")):
            chosen = [r for r in rows if r["split"] == split and bool(r["profile"]) == noisy]
            if chosen:
                ax.scatter([r["face_ssim"] for r in chosen], [r["reid_other"] for r in chosen], marker=marker,
                           color=colour, alpha=0.75, label=f"{split}, {'noise profile' if noisy else 'no noise'}")
    chance = rows[0]["reid_chance"]
    ax.axhline(2 * chance, ls="--", color="grey")
    ax.axvline(0.30, ls="--", color="grey")
    for name, label in (("flat_mean_colour_face_ssim", " flat mean colour"),
                        ("boxes_only_face_ssim", " boxes only")):
        ax.axvline(baselines[name], ls=":", color="black")
        ax.text(baselines[name], 0.6, label, fontsize=8, rotation=90, va="center")
    ax.text(0.302, 2 * chance + 0.01, "bars: SSIM 0.30, re-id 2x chance", fontsize=8, color="grey")
    ax.set_xlabel("face-crop SSIM of the reconstruction")
    ax.set_ylabel("re-identified (other photo of the person)")
    ax.set_ylim(-0.03, 1.08)
    ax.set_title("Every attack of the budget run, by split (18 victims, 13 re-id queries)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict], baselines: dict) -> str:
    device = next((r["device"] for r in rows), "?")
    lines = [f"# Attack budget (reconstructions on {device}; scored on the CPU with dlib)", "",
             "Victims: the 18 labelled photos of the unlabelled set; re-id: the reconstruction's face is nearest "
             f"to another photo of the same person (of {rows[0]['reid_other_queries'] if rows else '?'}, chance "
             f"{rows[0]['reid_chance']:.0%}). A flat image of the photo's mean colour scores face SSIM "
             f"{baselines['flat_mean_colour_face_ssim']:.3f}: the bar of 0.30 is what a reconstruction that learned "
             "nothing gets. The boxes-only guess (`privacy_attack.template`: the attacker's average face painted "
             "into each face box, which the tail returns by design, over the mean colour) scores "
             f"{baselines['boxes_only_face_ssim']:.3f} and re-identifies {baselines['boxes_only_reid_other_hits']}: "
             "an attack learns something about a face only above it." if rows else "",
             "",
             "TV: the inversion's prior weight, relative to its data term scaled to mean-square weight 1 (the run "
             "weighed it by 1/s^2; the raw weight it used is in the JSON as tv_weight_raw).",
             "",
             f"Face SSIM at {COARSE_SIDE} px: the same crops shrunk to {COARSE_SIDE}x{COARSE_SIDE} (pose, light and "
             f"outline rather than detail); flat {baselines['flat_mean_colour_face_ssim_coarse']:.3f}, boxes only "
             f"{baselines['boxes_only_face_ssim_coarse']:.3f}"
             + (" (rows scored before it was added show —)." if any("face_ssim_coarse" not in r for r in rows)
                else "."),
             "",
             f"| split | noise | k | attack | budget | wall s | face SSIM | face SSIM at {COARSE_SIDE} px | "
             "re-id (other photo) | finds face |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = f"{r['steps']} steps, TV {r['tv_weight']:g}" if r["attack"] == "inversion" else \
            f"{r['seconds']:g} s, {r.get('decoder_steps', '?')} steps"
        noise = Path(r["profile"]).name.removesuffix(".safetensors") if r["profile"] else "none"
        k = f"{r['k']} rotating" if r.get("rotating") else str(r["k"])
        coarse = f"{r['face_ssim_coarse']:.3f}" if "face_ssim_coarse" in r else "—"
        lines.append(f"| {r['split']} | {noise} | {k} | {r['attack']} | {budget} | "
                     f"{r['wall_seconds']:g} | {r['face_ssim']:.3f} | {coarse} | "
                     f"{r['reid_other_hits']}/{r['reid_other_queries']} | {r['finds_face']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("reconstruct", help="run the attacks; write reconstructions-*.npz and runs.json")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--shared", default=os.environ.get("FROSTED_SHARED", "../shared"))
    run.add_argument("--out", required=True)
    run.add_argument("--seconds", type=float, default=420.0, help="start no attack after this long")
    run.add_argument("--profile-rdcl", default="alpha-0.4")
    run.add_argument("--profile-deep", default="inception3-alpha-0.4", help="a profile fitted at the inception3 split")
    run.add_argument("--plan", choices=sorted(PLANS), default="budget")
    run.add_argument("--scale", type=float, default=1.0, help="multiply every budget (0.01: a smoke test)")
    run.add_argument("--limit", type=int, default=None, help="only the plan's first N attacks")
    run.add_argument("--attacker-limit", type=int, default=None, help="only the decoder's first N training photos")
    scoring = verbs.add_parser("score", help="score a reconstruct folder: face SSIM, dlib re-identification")
    scoring.add_argument("folder")
    scoring.add_argument("--shared", default=os.environ.get("FROSTED_SHARED", "../shared"))
    scoring.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    reconstruct(args) if args.verb == "reconstruct" else score_runs(args)


if __name__ == "__main__":
    main()
