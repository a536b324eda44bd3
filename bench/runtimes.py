"""Every installed runtime side by side: head, head + noise, tail, and a 1920x1080 frame's preprocess + head +
noise, at 1024x1024 and 1024x576, splits rdcl and inception3, batch 1 and 8.

    FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/runtimes.py [--rounds 2] [--seconds 1.0] [--threads 2]

The parent exports the graphs once (timed), then runs each runtime in a fresh child process (``--worker NAME``),
round after round, the order rotating so drift on a noisy machine hits each; each figure is the median over
rounds of the per-round median. Inputs are what the product hands a head runtime: the model input as
`facesplit.preprocess` makes it (an NHWC buffer viewed as NCHW), batches stacked the same way; a runtime that
wants dense NCHW pays for the copy. The noise is the product's sampler (AES-CTR + Box-Muller) with a profile of
the default profile's form (its rank's basis, when it has one). Each worker also checks its graphs against
torch on real photos (max abs difference of activations, box offsets and scores) and records the CPU pressure it
ran under (Linux PSI).

On a GPU (bench/gpu_session.sh), the columns ``torch-cuda`` and ``torch-cuda-fp16`` (torch with ``--device cuda``, the
head at float32 or ``--precision float16``; the noise drawn on the GPU by the ChaCha20 sampler), ``onnxruntime-cuda``
(its CUDA execution provider) and ``tensorrt``, ``tensorrt-fp16`` and ``tensorrt-int8`` (its FP16 kernels, and the
same int8 QDQ graph as ``openvino-int8`` in its INT8 kernels), with ``--batches 1,8,32,128`` for frames/s at large
batches; a column whose device or library is missing is listed as not run, with the reason.

``openvino-int8`` is OpenVINO with the head quantized to int8 by NNCF (`--precision int8`, calibrated on MIT+CMU
folds 1-5 of the shared data; quantized once in the parent, timed); its tail is OpenVINO's float one. A runtime
that converts pixels itself (OpenVINO: uint8 NHWC in, the mean subtracted in the compiled model) gets the frame's
pixels in the 1920x1080 item, as the product's `EdgeHead` does; that item's stages (preprocess, head, noise) are
recorded too, at the default profile's split and size.

Targets reported: the best CPU runtime's head at inception3, 1024x576, batch 1 at least 2x torch's throughput
in the same run; preprocess + head + noise of a 1920x1080 frame under 5.07 ms (TR-4928's one obfuscation of a
1920x1080 image on a V100). Writes ``runtimes.json`` and ``runtimes.md`` under ``--out`` (bench/results);
``runtimes-threadsN.*`` with ``--threads N`` other than one per core.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_model import cpu_stall_us, hd_frame, machine_info

from facesplit.detector import SplitDetector, at_split
from facesplit.faceboxes import activation_shape
from facesplit.images import read_image_bgr, sample_image
from facesplit.noise import DEFAULT_PROFILE
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.shipped import resolve_profile
from facesplit.noise.streams import gaussian_stream
from facesplit.pipeline import EdgeHead, add_noise, noise_device
from facesplit.preprocess import InputSize, preprocess
from facesplit.runtime import tune_cpu_runtime
from facesplit.runtimes import DeviceHeadRuntime
from facesplit.runtimes.factory import head_runtime, tail_runtime
from facesplit.runtimes.graphs import cached_graph
from facesplit.weights import load_faceboxes, resolve_weights

CANDIDATES = ("torch", "onnxruntime", "openvino", "openvino-int8")  # CPU runtimes; tensorrt needs a GPU
INT8 = "openvino-int8"  # a column: the runtime, with the head at --precision int8
# column -> (runtime, head precision, device): the GPU columns (bench/gpu_session.sh runs them on a lent GPU)
GPU_COLUMNS = {"torch-cuda": ("torch", "float32", "cuda"), "torch-cuda-fp16": ("torch", "float16", "cuda"),
               "onnxruntime-cuda": ("onnxruntime", "float32", "cuda"), "tensorrt": ("tensorrt", "float32", "cuda"),
               "tensorrt-fp16": ("tensorrt", "float16", "cuda"), "tensorrt-int8": ("tensorrt", "int8", "cuda")}
SPLITS = ("rdcl", "inception3")
SIZES = ("1024x1024", "1024x576")
BATCHES = (1, 8)
TARGET_SPEEDUP = 2.0
TARGET_FRAME_MS = 5.07
DEFAULT_HEAD = ("inception3", "1024x576")  # the default profile's split; 16:9 frames unpadded
PHOTO = "data/faces/dlib/images/2008_001322.jpg"  # in shared/, if present: a second real photo for parity
FRAME_ITEM = "preprocess + head + noise 1920x1080"

Item = tuple[str, str, str, int, Callable[[], object]]  # (item, split, size, batch, function)


# --------------------------------------------------------------------------------------------- worker side

def runtime_and_precision(column: str) -> tuple[str, str]:
    if column in GPU_COLUMNS:
        return GPU_COLUMNS[column][:2]
    return ("openvino", "int8") if column == INT8 else (column, "float32")


def device_of(column: str) -> str:
    return GPU_COLUMNS[column][2] if column in GPU_COLUMNS else "cpu"


def available(column: str) -> str | None:
    """None if the column's runtime can run here, else why not."""
    runtime, precision = runtime_and_precision(column)
    if device_of(column) == "cuda" and not torch.cuda.is_available():
        return f"no CUDA device for torch {torch.__version__}"
    if runtime == "torch":
        return None
    import importlib.util

    needs = (runtime, "onnx", "onnxscript") + (("nncf",) if precision == "int8" else ())
    absent = [m for m in needs if importlib.util.find_spec(m) is None]
    if absent:
        return f"not installed: {', '.join(absent)}"
    if column == "onnxruntime-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return f"onnxruntime {onnxruntime.__version__} has no CUDA execution provider (onnxruntime-gpu)"
    if precision == "int8":
        from facesplit.runtimes.int8 import CalibrationError, calibration_frames

        try:
            calibration_frames()
        except CalibrationError as exc:
            return str(exc)
    return None


def time_ms(fn: Callable[[], object], seconds: float, min_iterations: int = 8) -> dict[str, float]:
    for _ in range(2):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iterations or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median": statistics.median(times), "p10": times[len(times) // 10],
            "p90": times[min(len(times) - 1, (9 * len(times)) // 10)], "iterations": len(times)}


@functools.cache
def default_rank() -> int | None:
    return NoiseProfile.load(resolve_profile(DEFAULT_PROFILE)).rank


def bench_profile(size: InputSize) -> NoiseProfile:
    """A profile of the default profile's form (per element, in a basis of its rank when it has one) and of the
    activation's shape at ``size``; its values do not matter."""
    assert size.width is not None and size.height is not None
    channels, height, width = activation_shape(size.height, size.width)
    rank = default_rank()
    directions = torch.randn(channels, rank or 1, generator=torch.Generator().manual_seed(0))
    basis = None if rank is None else torch.linalg.qr(directions)[0]
    shape = (rank or channels, height, width)
    return NoiseProfile(mu=torch.zeros(shape), sigma=torch.full(shape, 0.3), alpha=0.4,
                        input_size=(size.width, size.height), head_fingerprint="bench", basis=basis)


def stacked(x: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` copies of a (1, 3, H, W) channels_last model input, in the same layout."""
    nhwc = np.ascontiguousarray(np.repeat(x.transpose(0, 2, 3, 1), batch, axis=0))
    return nhwc.transpose(0, 3, 1, 2)


def parity(column: str, detector: SplitDetector, threads: int, graphs: Path, photos: list[np.ndarray]
           ) -> dict[str, float]:
    runtime, precision = runtime_and_precision(column)
    device = device_of(column)
    size = detector.input_size
    inputs = np.concatenate([np.ascontiguousarray(preprocess(p, size)[0].numpy()) for p in photos])
    activations = head_runtime("torch", detector).run(inputs)
    loc, scores = tail_runtime("torch", detector).run(activations)
    other_loc, other_scores = tail_runtime(runtime, detector, threads, graphs, device).run(activations)
    head_out = head_runtime(runtime, detector, threads, graphs, precision, device=device).run(inputs)
    return {"head": float(np.abs(head_out - activations).max()), "activation_max": float(activations.max()),
            "loc": float(np.abs(other_loc - loc).max()), "scores": float(np.abs(other_scores - scores).max())}


def build_items(column: str, model: Any, threads: int, graphs: Path, batches: tuple[int, ...] = BATCHES
                ) -> tuple[list[Item], list[dict[str, Any]], list[dict[str, float]]]:
    """The timed items, the parity checks, and a list the default head's 1920x1080 item logs its stages in."""
    runtime, precision = runtime_and_precision(column)
    device = device_of(column)
    frame = hd_frame()
    photos = [sample_image("astronaut")]
    shared = Path(os.environ.get("FROSTED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    if (shared / PHOTO).is_file():
        photos.append(read_image_bgr(shared / PHOTO))
    items: list[Item] = []
    checks: list[dict[str, Any]] = []
    stages: list[dict[str, float]] = []
    for split in SPLITS:
        for size_text in SIZES:
            size = InputSize.parse(size_text)
            detector = SplitDetector(model.at_split(split), size)
            head = head_runtime(runtime, detector, threads, graphs, precision, device=device)
            tail = tail_runtime(runtime, detector, threads, graphs, device)
            # drawn where the head leaves the activation: AES-CTR on the CPU, ChaCha20 on a GPU
            noise = Obfuscator(bench_profile(size), gaussian_stream(noise_device(head)))
            # a GPU head's activation stays there for the noise, as in the product's EdgeHead
            on_device = head.run_on_device if isinstance(head, DeviceHeadRuntime) else head.run
            x = preprocess(frame, size)[0].numpy()
            reference = head_runtime("torch", detector)
            for batch in batches:
                inputs = stacked(x, batch)
                activations = np.ascontiguousarray(reference.run(inputs))  # as the tail gets them off the wire
                items += [
                    ("head", split, size_text, batch, lambda h=head, i=inputs: h.run(i)),
                    ("head + noise", split, size_text, batch,
                     lambda h=on_device, i=inputs, n=noise: add_noise(n, h(i))),
                    ("tail", split, size_text, batch, lambda t=tail, a=activations: t.run(a)),
                ]
            edge = EdgeHead(head, size, noise)
            log = stages if (split, size_text) == DEFAULT_HEAD else []
            items.append((FRAME_ITEM, split, size_text, 1, lambda e=edge, s=log: s.append(e(frame).stage_seconds)))
            if column != "torch":
                checks.append({"split": split, "size": size_text, **parity(column, detector, threads, graphs,
                                                                           photos)})
    return items, checks, stages


def batch_sizes(args: argparse.Namespace) -> tuple[int, ...]:
    return tuple(int(b) for b in args.batches.split(",") if b)


def run_worker(args: argparse.Namespace) -> None:
    tune_cpu_runtime(args.threads)
    model = load_faceboxes(args.weights)
    items, checks, stages = build_items(args.worker, model, args.threads, Path(args.graphs), batch_sizes(args))
    results = []
    for item, split, size, batch, fn in items:
        stages.clear()  # only the timed calls of the default head's frame item
        stats = time_ms(fn, args.seconds)
        results.append({"item": item, "split": split, "size": size, "batch": batch, **stats,
                        "fps": 1000 * batch / stats["median"]})
        if stages:
            results[-1]["stages_ms"] = {k: 1000 * statistics.median(s[k] for s in stages) for k in stages[0]}
        print(f"{args.worker:>11} round {args.round}: {item}, {split}, {size}, batch {batch}: "
              f"{stats['median']:.2f} ms", file=sys.stderr)
    print(json.dumps({"runtime": args.worker, "items": results, "parity": checks}))


# --------------------------------------------------------------------------------------------- parent side

def export_all(weights: Path, graphs: Path, int8: bool) -> list[dict[str, Any]]:
    """Every graph the workers load, exported (and with ``int8``, quantized) once here, timed, so no worker
    times an export."""
    model = load_faceboxes(weights)
    exported = []
    for split in SPLITS:
        for size_text in SIZES:
            detector = at_split(SplitDetector(model, InputSize.parse(size_text)), split)
            for part in ("head", "tail"):
                started, before = time.perf_counter(), set(graphs.glob("*"))
                path, _ = cached_graph(detector, part, "onnxruntime", graphs)
                exported.append({"part": part, "split": split, "size": size_text, "cached": path in before,
                                 "export_s": round(time.perf_counter() - started, 2), "bytes": path.stat().st_size})
            if int8:
                from facesplit.runtimes.int8 import int8_graph

                started, before = time.perf_counter(), set(graphs.glob("*"))
                path, _ = int8_graph(detector, None, graphs)
                exported.append({"part": "head int8 (calibrate + quantize)", "split": split, "size": size_text,
                                 "cached": path in before, "export_s": round(time.perf_counter() - started, 2),
                                 "bytes": path.stat().st_size})
    return exported


def spawn(runtime: str, round_index: int, args: argparse.Namespace, weights: Path, graphs: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", runtime, "--round", str(round_index),
           "--weights", str(weights), "--graphs", str(graphs), "--threads", str(args.threads),
           "--seconds", str(args.seconds), "--batches", args.batches]
    stall_before, started = cpu_stall_us(), time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr: progress, errors
    wall_s, stall_after = time.perf_counter() - started, cpu_stall_us()
    if done.returncode != 0:
        raise SystemExit(f"the {runtime} worker failed (exit {done.returncode}); its error is above")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    run.update(round=round_index, wall_s=round(wall_s, 1))
    if stall_before is not None and stall_after is not None:
        run["cpu_pressure"] = round((stall_after - stall_before) / (wall_s * 1e6), 3)
    return run


def summarise(runs: list[dict[str, Any]], runtimes: list[str]) -> list[dict[str, Any]]:
    """One row per (item, split, size, batch): each runtime's median over rounds, and the best vs torch."""
    rows = []
    first = next(run for run in runs if run["runtime"] == runtimes[0])
    for index, item in enumerate(first["items"]):
        row: dict[str, Any] = {k: item[k] for k in ("item", "split", "size", "batch")}
        for runtime in runtimes:
            per_round = [run["items"][index] for run in runs if run["runtime"] == runtime]
            assert all(r["item"] == item["item"] and r["split"] == item["split"] and r["size"] == item["size"]
                       and r["batch"] == item["batch"] for r in per_round)
            medians = [r["median"] for r in per_round]
            row[runtime] = {stat: statistics.median(r[stat] for r in per_round) for stat in ("median", "p10", "p90")}
            row[runtime]["fps"] = 1000 * item["batch"] / row[runtime]["median"]
            row[runtime]["rounds_disagree"] = max(medians) > 1.2 * min(medians)
            row[runtime]["round_medians"] = medians
            if all("stages_ms" in r for r in per_round):
                row[runtime]["stages_ms"] = {k: statistics.median(r["stages_ms"][k] for r in per_round)
                                             for k in per_round[0]["stages_ms"]}
        best = min(runtimes, key=lambda r: row[r]["median"])
        row["best"] = best
        row["best_vs_torch"] = row["torch"]["median"] / row[best]["median"]
        rows.append(row)
    return rows


def targets(rows: list[dict[str, Any]], runtimes: list[str]) -> dict[str, Any]:
    def find(item: str, batch: int = 1) -> dict[str, Any]:
        return next(r for r in rows if (r["item"], r["split"], r["size"], r["batch"]) == (item, *DEFAULT_HEAD, batch))

    head = find("head")
    others = [r for r in runtimes if r != "torch" and device_of(r) == "cpu"] or ["torch"]
    best = min(others, key=lambda r: head[r]["median"])
    frame = find(FRAME_ITEM)
    fastest = min(runtimes, key=lambda r: frame[r]["median"])
    floats = [r for r in runtimes if runtime_and_precision(r)[1] == "float32"]
    fastest_float = min(floats, key=lambda r: frame[r]["median"])
    return {
        "frame_ms_float": {"runtime": fastest_float, "ms": frame[fastest_float]["median"],
                           "met": frame[fastest_float]["median"] < TARGET_FRAME_MS},
        "frame_stages_ms": {r: frame[r].get("stages_ms") for r in runtimes},
        "head_speedup": {"runtime": best, "speedup_vs_torch": head["torch"]["median"] / head[best]["median"],
                         "target": TARGET_SPEEDUP,
                         "met": head["torch"]["median"] / head[best]["median"] >= TARGET_SPEEDUP},
        "frame_ms": {"runtime": fastest, "ms": frame[fastest]["median"], "target_ms": TARGET_FRAME_MS,
                     "met": frame[fastest]["median"] < TARGET_FRAME_MS},
    }


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], runtimes: list[str], skipped: dict[str, str],
             exported: list[dict[str, Any]], goal: dict[str, Any], info: dict[str, Any],
             args: argparse.Namespace) -> str:
    def cell(stats: dict[str, Any]) -> str:
        flag = " *" if stats["rounds_disagree"] else ""
        return f"{stats['median']:.2f} [{stats['p10']:.2f}-{stats['p90']:.2f}] ({stats['fps']:.0f}/s){flag}"

    pressure = [f"{run['runtime']} r{run['round']} {run.get('cpu_pressure', float('nan')):.0%}" for run in runs]
    busy = any(run.get("cpu_pressure", 0.0) > 0.25 for run in runs)
    lines = [
        f"CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs, AVX-512: "
        f"{'yes' if info['avx512'] else 'no'}), GPU: {info.get('cuda_device') or 'none'}, torch {info['torch']}, "
        f"{args.threads} threads per runtime, "
        f"{info['date']}. Versions: {', '.join(f'{k} {v}' for k, v in info['runtimes'].items())}. "
        f"ms per call, median [p10-p90] (frames per second); median over {args.rounds} rounds of each round's "
        "median; * = the rounds' medians differ by more than 20 %.",
        "",
        f"CPU pressure per worker, in run order (share of time some task waited for a CPU): {', '.join(pressure)}.",
    ]
    if busy:
        lines += ["", "**The machine was busy (pressure over 25 %): other work competed for the cores; absolute "
                  "figures are inflated and ratios noisy. Rerun on a quiet machine before quoting them.**"]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{r} ({why})" for r, why in skipped.items()) + "."]
    head = goal["head_speedup"]
    frame = goal["frame_ms"]
    lines += [
        "", "Targets:", "",
        f"- head at {DEFAULT_HEAD[0]}, {DEFAULT_HEAD[1]}, batch 1: best CPU runtime {head['runtime']} is "
        f"{head['speedup_vs_torch']:.2f}x torch's throughput (target >= {TARGET_SPEEDUP:g}x): "
        f"**{'met' if head['met'] else 'not met'}**",
        f"- {FRAME_ITEM} at {DEFAULT_HEAD[0]}, {DEFAULT_HEAD[1]}: {frame['ms']:.2f} ms on {frame['runtime']} "
        f"(target < {TARGET_FRAME_MS} ms): **{'met' if frame['met'] else 'not met'}**; the fastest float head: "
        f"{goal['frame_ms_float']['ms']:.2f} ms on {goal['frame_ms_float']['runtime']}"
        f"{'' if INT8 not in runtimes else ' (int8: bench/precision_accuracy.py measures its AP)'}",
        "", f"Where the {FRAME_ITEM} time goes at {DEFAULT_HEAD[0]}, {DEFAULT_HEAD[1]} (median ms of each stage; "
        "preprocess: resize and, for runtimes that take model inputs, the float conversion and mean; noise: the "
        "AES-CTR draw, the channels_last layout and the add):", "",
        "| runtime | preprocess | head | noise |", "|---|---|---|---|",
        *[f"| {r} | {st['preprocess']:.2f} | {st['head']:.2f} | {st['noise']:.2f} |"
          for r, st in goal["frame_stages_ms"].items() if st],
        "",
        "| item | split | size | batch | " + " | ".join(f"{r} ms" for r in runtimes) + " | best vs torch |",
        "|---|---|---|---|" + "---|" * len(runtimes) + "---|",
    ]
    for row in rows:
        lines.append(f"| {row['item']} | {row['split']} | {row['size']} | {row['batch']} | "
                     + " | ".join(cell(row[r]) for r in runtimes)
                     + f" | {row['best_vs_torch']:.2f}x ({row['best']}) |")
    checks = [(run["runtime"], c) for run in runs if run["round"] == 0 for c in run["parity"]]
    if checks:
        lines += ["", "Parity with torch on real photos (astronaut + a dlib photo, one batch), max abs difference:",
                  "", "| runtime | split | size | head activations (max value) | tail box offsets | tail scores |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {runtime} | {c['split']} | {c['size']} | {c['head']:.2e} ({c['activation_max']:.2f}) | "
                  f"{c['loc']:.2e} | {c['scores']:.2e} |" for runtime, c in checks]
    lines += ["", "ONNX export (once, in the parent): " + ", ".join(
        f"{e['part']} {e['split']} {e['size']} "
        + ("cached (--graphs)" if e.get("cached") else f"{e['export_s']:.1f} s") for e in exported) + "."]
    return "\n".join(lines) + "\n"


def runtime_versions(runtimes: list[str]) -> dict[str, str]:
    versions = {}
    for column in runtimes:
        runtime, precision = runtime_and_precision(column)
        for name in [runtime] + (["nncf"] if precision == "int8" else []):
            if name != "torch":
                versions[name] = str(getattr(__import__(name), "__version__", "?"))
    return versions


def run_parent(args: argparse.Namespace) -> None:
    weights = resolve_weights(args.weights)
    runtimes = [r for r in args.runtimes.split(",") if r]
    skipped = {r: why for r in runtimes if (why := available(r)) is not None}
    runtimes = [r for r in runtimes if r not in skipped]
    if "torch" not in runtimes:
        raise SystemExit("torch must be among --runtimes: it is what the others are compared with")
    with tempfile.TemporaryDirectory(prefix="frosted-bench-graphs-") as scratch:
        graphs = Path(args.graphs) if args.graphs else Path(scratch)
        graph_runtimes = [r for r in runtimes if runtime_and_precision(r)[0] != "torch"]
        int8 = any(runtime_and_precision(column)[1] == "int8" for column in runtimes)
        exported = export_all(weights, graphs, int8) if graph_runtimes else []
        runs = []
        for round_index in range(args.rounds):
            shift = round_index % len(runtimes)
            for runtime in runtimes[shift:] + runtimes[:shift]:
                runs.append(spawn(runtime, round_index, args, weights, graphs))
    rows = summarise(runs, runtimes)
    goal = targets(rows, runtimes)
    info = {**machine_info(args.threads), "runtimes": runtime_versions(runtimes),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"machine": info, "runtimes": runtimes, "skipped": skipped, "rounds": args.rounds,
                "seconds_per_item": args.seconds, "targets": goal, "exported": exported, "rows": rows,
                "parity": [{"runtime": run["runtime"], **c} for run in runs if run["round"] == 0
                           for c in run["parity"]],
                "workers": [{k: run[k] for k in ("runtime", "round", "wall_s", "cpu_pressure") if k in run}
                            for run in runs]}
    # a run at other than one thread per core (less sensitive to a busy machine) keeps the default run's files
    stem = "runtimes" if args.threads == (os.cpu_count() or 1) else f"runtimes-threads{args.threads}"
    (out / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(rows, runs, runtimes, skipped, exported, goal, info, args))
    print((out / f"{stem}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="FaceBoxes checkpoint (default: $FROSTED_WEIGHTS)")
    parser.add_argument("--runtimes", default=",".join(CANDIDATES), help="comma-separated; torch must be one")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every runtime")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each item per round")
    parser.add_argument("--graphs", default=None, help="graph folder (default: a fresh temporary one)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)),
                        help="comma-separated batch sizes (a GPU's frames/s: 1,8,32,128)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
