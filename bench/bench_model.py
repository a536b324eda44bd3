"""CPU speed of the split FaceBoxes detector: naive (NCHW, unfused) vs optimized (what the product runs).

    FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/bench_model.py [--iterations 100] [--rounds 2]

Each configuration is timed in a fresh child process (``--worker CONFIG``), because the allocator trap
depends on process state: a process that has already called ``tune_cpu_runtime()`` (or one that has not)
cannot stand in for the other. The rounds alternate the order of the two so that drift on a noisy machine
hits both; the figures are medians over rounds of per-round medians. Writes ``model.json`` and
``model.md`` under ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from skimage import data as skdata
from tqdm import tqdm

from facesplit.detector import SplitDetector, at_split
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.sampler import GaussianStream
from facesplit.postprocess import PostprocessConfig, detections_from_outputs
from facesplit.preprocess import InputSize, preprocess
from facesplit.runtime import tune_cpu_runtime
from facesplit.weights import head_fingerprint, load_faceboxes, resolve_weights, sha256_of

CONFIGS = ("naive", "optimized")
BASIS_RANK = 48  # the shipped rank profile's (Makefile: RANK)
DEEP_SPLIT = "inception3"  # the default profile's split
FRAME_W, FRAME_H = 1920, 1080
# Environment variables that would silently give the naive child the allocator fix (or take it from the
# optimized one); the children run without them so each configuration means what its name says.
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "FROSTED_KEEP_MALLOC")

# REFERENCE.md's figures (Zen 5 with AVX-512, torch 2.13.0, 2 threads): "NCHW / channels_last" where it has
# both, one figure where the item does not depend on the configuration.
REFERENCE_MS = {
    ("head", "1024x1024"): "13.4 / 4.9-5.4",
    ("head", "1024x576"): "3.7 / 2.6",
    ("tail", "1024x1024"): "6.3 / 3.4-3.7",
    ("whole model", "1024x1024"): "20.9 / 8.7-9.8",
    ("preprocess 1920x1080", "1024x1024"): "4.5",
    ("preprocess + head 1920x1080", "1024x576"): "12.0",
    ("post-processing @0.01", "1024x1024"): "~21 (decode 0.95 + NMS ~20)",
    ("post-processing @0.5", "1024x1024"): "~0.7 (NMS)",
}

Item = tuple[str, str, Callable[[], object], dict[str, Any]]  # (name, size, function to time, notes)


# --------------------------------------------------------------------------------------------- worker side

def astronaut_bgr() -> np.ndarray:
    """A real photo (512x512), so post-processing sees real score distributions, not noise."""
    return np.ascontiguousarray(skdata.astronaut()[..., ::-1])


def hd_frame() -> np.ndarray:
    """A 1920x1080 BGR uint8 frame (the astronaut stretched; content does not matter for resize speed)."""
    return cv2.resize(astronaut_bgr(), (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR)


def time_ms(fn: Callable[[], object], warmup: int, iterations: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    p10, _, p90 = np.percentile(samples, [10, 50, 90])
    return {"median": statistics.median(samples), "p10": float(p10), "p90": float(p90), "n": iterations}


def build_items(config: str, weights: Path, sizes: list[InputSize], threads: int) -> list[Item]:
    """The closures to time for one configuration. Inputs are prepared outside the timed calls."""
    if config == "optimized":
        tune_cpu_runtime(threads)  # before the first big allocation, as the product does at start-up
        det = SplitDetector(load_faceboxes(weights))
        head: Callable[[torch.Tensor], torch.Tensor] = det.head
        tail: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = det.tail
        deep = at_split(det, DEEP_SPLIT)
        deep_head, deep_tail = deep.head, deep.tail

        def to_model(x: torch.Tensor) -> torch.Tensor:
            return x  # preprocess already returns channels_last, which the fused model expects
    else:
        torch.set_num_threads(threads)
        model = load_faceboxes(weights)
        head, tail = model.head, model.tail
        deep_model = model.at_split(DEEP_SPLIT)
        deep_head, deep_tail = deep_model.head, deep_model.tail

        def to_model(x: torch.Tensor) -> torch.Tensor:
            # A channels_last input would make the NCHW model run channels_last too: force plain NCHW.
            return x.contiguous()

    photo, frame = astronaut_bgr(), hd_frame()
    source = det.source if config == "optimized" else model
    items: list[Item] = []
    for size in sizes:
        name = str(size)
        x = to_model(preprocess(photo, size)[0])
        activation = head(x)
        loc, scores = tail(activation)
        # Guard: the configurations must really run the memory layout their names claim.
        assert activation.is_contiguous(memory_format=torch.channels_last) == (config == "optimized")
        loc_np, scores_np = loc[0].numpy(), scores[0].numpy()
        h, w = x.shape[-2:]

        def pre(size: InputSize = size) -> object:
            return preprocess(frame, size)

        def pre_head(size: InputSize = size) -> object:
            return head(to_model(preprocess(frame, size)[0]))

        def post(threshold: float, h: int = h, w: int = w, loc_np: np.ndarray = loc_np,
                 scores_np: np.ndarray = scores_np) -> Callable[[], np.ndarray]:
            cfg = PostprocessConfig(score_threshold=threshold)
            return lambda: detections_from_outputs(loc_np, scores_np, h, w, cfg)

        # Noise for one frame: the product's CSPRNG sampler (AES-256-CTR + Box-Muller) plus the add, vs the
        # plain torch.randn (Mersenne Twister, unfit for the product: its outputs reveal its state).
        profile = NoiseProfile(mu=torch.zeros(activation.shape[1:]), sigma=torch.full(activation.shape[1:], 0.5),
                               alpha=0.0, input_size=(x.shape[-1], x.shape[-2]),
                               head_fingerprint=head_fingerprint(source))
        # A profile with a basis (`fit-noise --rank`): project onto R directions, noise them, expand back.
        basis, _ = torch.linalg.qr(torch.randn(activation.shape[1], activation.shape[1]))
        in_basis = replace(profile, mu=profile.mu[:BASIS_RANK], sigma=profile.sigma[:BASIS_RANK],
                           basis=basis[:, :BASIS_RANK].contiguous())
        # Per spatial frequency in a full basis (`fit-noise --rank 128 --dct`): two DCT products more.
        in_frequencies = replace(profile, basis=basis.contiguous(), dct=True)
        shape = tuple(activation.shape)
        if config == "optimized":
            draw: Callable[[], object] = lambda s=GaussianStream(), n=shape: s.normal(n)  # noqa: E731
            noise: Callable[[], object] = lambda o=Obfuscator(profile), a=activation: o(a)  # noqa: E731
            noise_basis: Callable[[], object] = lambda o=Obfuscator(in_basis), a=activation: o(a)  # noqa: E731
            noise_dct: Callable[[], object] = lambda o=Obfuscator(in_frequencies), a=activation: o(a)  # noqa: E731
        else:
            draw = lambda n=shape: torch.randn(n)  # noqa: E731
            noise = lambda p=profile, a=activation: a + p.mu + p.sigma * torch.randn(a.shape)  # noqa: E731
            noise_basis = lambda p=in_basis, a=activation: p.expand(  # noqa: E731
                p.coordinates(a) + p.mu + p.sigma * torch.randn(p.mu.shape))
            noise_dct = lambda p=in_frequencies, a=activation: p.expand(  # noqa: E731
                p.coordinates(a) + p.mu + p.sigma * torch.randn(p.mu.shape))
        items += [
            # the draw alone is the floor of every sampler below: the rest is the add and any transform
            ("noise draw only", name, draw, {"elements": int(activation.numel())}),
            ("noise sample + add", name, noise, {"elements": int(activation.numel())}),
            (f"noise sample + add, rank {BASIS_RANK}", name, noise_basis, {"rank": BASIS_RANK}),
            ("noise sample + add, rank 128 x frequencies", name, noise_dct, {"rank": 128, "dct": True}),
            ("preprocess 1920x1080", name, pre, {}),
            ("preprocess + head 1920x1080", name, pre_head, {}),
            ("head", name, lambda x=x: head(x), {"activation": list(activation.shape)}),
            ("tail", name, lambda a=activation: tail(a), {"priors": int(scores_np.size)}),
            ("whole model", name, lambda x=x: tail(head(x)), {}),
            # the edge's share at the deeper split (`--split inception3`): what its privacy costs there
            (f"head, split {DEEP_SPLIT}", name, lambda x=x: deep_head(x), {}),
            (f"tail, split {DEEP_SPLIT}", name, lambda a=deep_head(x): deep_tail(a), {}),
        ]
        for threshold in (0.01, 0.5):
            fn = post(threshold)
            notes = {"candidates": int((scores_np > threshold).sum()), "detections": len(fn())}
            items.append((f"post-processing @{threshold}", name, fn, notes))
    return items


def run_worker(args: argparse.Namespace) -> None:
    """Time every item in this (fresh) process and print one JSON object on stdout."""
    results = []
    with torch.inference_mode():  # the optimized path enters it per call anyway; naive needs it here
        items = build_items(args.worker, Path(args.weights), parse_sizes(args.sizes), args.threads)
        for name, size, fn, notes in tqdm(items, desc=f"{args.worker:>9} round {args.round}", file=sys.stderr,
                                          leave=False):
            results.append({"item": name, "size": size, **time_ms(fn, args.warmup, args.iterations),
                            **notes})
    print(json.dumps({"config": args.worker, "torch_threads": torch.get_num_threads(), "items": results}))


# --------------------------------------------------------------------------------------------- parent side

def parse_sizes(text: str) -> list[InputSize]:
    return [InputSize.parse(part) for part in text.split(",") if part.strip()]


def machine_info(threads: int) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # the first CPU's entry is enough: all cores are alike here
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    return {
        "cpu_model": fields.get("model name", platform.processor() or "unknown"),
        "logical_cpus": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512": any(f.startswith("avx512") for f in flags),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
        "torch_threads": threads,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def numerical_check(weights: Path, sizes: list[InputSize]) -> list[dict[str, Any]]:
    """Optimized head+tail vs the naive whole model on the astronaut: a fast path must also be right."""
    model = load_faceboxes(weights)
    det = SplitDetector(model)
    rows = []
    for size in sizes:
        x, _ = preprocess(astronaut_bgr(), size)
        with torch.inference_mode():
            loc_n, scores_n = model(x.contiguous())
        loc_o, scores_o = det.tail(det.head(x))
        h, w = x.shape[-2:]
        strict = PostprocessConfig(score_threshold=0.5)
        rows.append({
            "size": str(size),
            "loc_max_abs_diff": float((loc_n - loc_o).abs().max()),
            "score_max_abs_diff": float((scores_n - scores_o).abs().max()),
            "detections_naive@0.5": len(detections_from_outputs(loc_n[0].numpy(), scores_n[0].numpy(), h, w,
                                                                 strict)),
            "detections_optimized@0.5": len(detections_from_outputs(loc_o[0].numpy(), scores_o[0].numpy(), h,
                                                                     w, strict)),
        })
    return rows


def cpu_stall_us() -> int | None:
    """Microseconds that runnable tasks waited for a CPU so far (Linux PSI), to detect a busy machine."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(some.rsplit("total=", 1)[1])


def spawn(config: str, round_index: int, args: argparse.Namespace, weights: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--round", str(round_index),
           "--weights", str(weights), "--sizes", args.sizes, "--threads", str(args.threads),
           "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    stall_before, started = cpu_stall_us(), time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)  # stderr: progress, errors
    wall_s, stall_after = time.perf_counter() - started, cpu_stall_us()
    if done.returncode != 0:
        raise SystemExit(f"the {config} worker failed (exit {done.returncode}); its error is above")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    run["wall_s"] = round(wall_s, 1)
    # Share of the worker's time during which some task waited for a CPU: near 0 on an idle machine,
    # large when something else competes for the cores (then the figures are not trustworthy).
    if stall_before is not None and stall_after is not None:
        run["cpu_pressure"] = round((stall_after - stall_before) / (wall_s * 1e6), 3)
    return run


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Median over rounds of each item's median / p10 / p90, per configuration, plus the speed-up."""
    rows = []
    for index, first in enumerate(runs["naive"][0]["items"]):
        row: dict[str, Any] = {"item": first["item"], "size": first["size"]}
        for config in CONFIGS:
            per_round = [run["items"][index] for run in runs[config]]
            assert all(r["item"] == first["item"] and r["size"] == first["size"] for r in per_round)
            row[config] = {stat: statistics.median(r[stat] for r in per_round)
                           for stat in ("median", "p10", "p90")}
            row[config]["rounds"] = [{k: v for k, v in r.items() if k not in ("item", "size")}
                                     for r in per_round]
            medians = [r["median"] for r in per_round]
            row[config]["rounds_disagree"] = max(medians) > 1.2 * min(medians)
        row["speedup"] = row["naive"]["median"] / row["optimized"]["median"]
        row["reference_ms"] = REFERENCE_MS.get((row["item"], row["size"]), "")
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], check: list[dict[str, Any]], runs: list[dict[str, Any]],
             info: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(stats: dict[str, Any]) -> str:
        flag = " *" if stats["rounds_disagree"] else ""
        return f"{stats['median']:.2f} [{stats['p10']:.2f}-{stats['p90']:.2f}]{flag}"

    pressure = [f"{run['config']} {run.get('cpu_pressure', float('nan')):.0%}" for run in runs]
    busy = any(run.get("cpu_pressure", 0.0) > 0.25 for run in runs)  # ~10 % is our own threads

    lines = [
        f"CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs, AVX-512: "
        f"{'yes' if info['avx512'] else 'no'}, torch kernels: {info['torch_cpu_capability']}), "
        f"torch {info['torch']}, {args.threads} threads, batch 1, {info['date']}. "
        f"Median [p10-p90] ms; median over {args.rounds} rounds of {args.iterations} iterations each; "
        "* = the rounds' medians differ by more than 20 %.",
        "",
        f"CPU pressure per worker, in run order (share of time some task waited for a CPU): "
        f"{', '.join(pressure)}."
        + (" **The machine was busy: do not trust these figures.**" if busy else ""),
        "",
        "| item | size | naive ms | optimized ms | speed-up | reference ms (NCHW / channels_last) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['item']} | {r['size']} | {cell(r['naive'])} | {cell(r['optimized'])} | "
              f"{r['speedup']:.2f}x | {r['reference_ms']} |" for r in rows]
    by_key = {(r["item"], r["size"]): r for r in rows}
    lines += ["", "Noise per frame as a share of the head's time (target: under 5 %):", ""]
    for size in sorted({r["size"] for r in rows}):
        for item in ("noise draw only", "noise sample + add", f"noise sample + add, rank {BASIS_RANK}",
                     "noise sample + add, rank 128 x frequencies"):
            if (item, size) in by_key and ("head", size) in by_key:
                noise, head = by_key[(item, size)], by_key[("head", size)]
                lines.append(f"- {size}, {item}: product sampler "
                             f"{noise['optimized']['median'] / head['optimized']['median']:.1%} of the optimized "
                             f"head; torch.randn {noise['naive']['median'] / head['naive']['median']:.1%} of the "
                             "naive head")
                deep = by_key.get((f"head, split {DEEP_SPLIT}", size))
                if deep is not None:
                    lines.append(f"  - with the head ending at {DEEP_SPLIT} (the default profile's): "
                                 f"{noise['optimized']['median'] / deep['optimized']['median']:.1%} of it")
    lines += [
        "",
        "Numerical check on the astronaut photo: optimized head+tail vs naive whole model.",
        "",
        "| size | loc max abs diff | score max abs diff | detections @0.5 naive / optimized |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c['size']} | {c['loc_max_abs_diff']:.2e} | {c['score_max_abs_diff']:.2e} | "
              f"{c['detections_naive@0.5']} / {c['detections_optimized@0.5']} |" for c in check]
    return "\n".join(lines) + "\n"


def run_parent(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    weights = resolve_weights(args.weights)
    sizes = parse_sizes(args.sizes)
    check = numerical_check(weights, sizes)
    in_order = []
    for round_index in range(args.rounds):
        # Alternate which configuration goes first so slow drift of the machine does not favour either.
        order = CONFIGS if round_index % 2 == 0 else CONFIGS[::-1]
        in_order += [spawn(config, round_index, args, weights) for config in order]
    rows = summarise({config: [run for run in in_order if run["config"] == config] for config in CONFIGS})
    info = machine_info(args.threads)
    table = markdown(rows, check, in_order, info, args)
    wall_s = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("sizes", "threads", "iterations", "warmup", "rounds")}
    report = {"machine": info, "settings": settings,
              "weights": {"path": str(weights), "sha256": sha256_of(weights)},
              "numerical_check": check, "results": rows,
              "workers": [{k: run[k] for k in ("config", "wall_s", "cpu_pressure") if k in run} for run in in_order],
              "wall_s": round(wall_s, 1)}
    (out / "model.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "model.md").write_text(table)
    print(table)
    print(f"wrote {out / 'model.json'} and {out / 'model.md'} in {wall_s:.0f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="FaceBoxesProd.pth (default: $FROSTED_WEIGHTS, then the cache)")
    parser.add_argument("--sizes", default="1024x1024,1024x576", help="model input sizes, WIDTHxHEIGHT,...")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per item")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per item before timing")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per configuration")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
