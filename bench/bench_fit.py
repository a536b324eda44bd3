"""Time of `frosted fit-noise` on this CPU: caching the head's activations once, then seconds per epoch.

    FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/bench_fit.py [--epochs 2]

The shipped profiles' setting (MIT+CMU folds 1-5 by distillation, 3 augmented views per image, batch 8, 1024
input), with and without the noise-aware tail. Per-epoch time is the median over the epochs of one fit.
Writes ``fit.json`` and ``fit.md`` under ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from facesplit.noise.fit import FitConfig, build_training_set, fit_profile
from facesplit.noise.fit_data import labelled_from_coco
from facesplit.preprocess import InputSize
from facesplit.runtime import tune_cpu_runtime
from facesplit.weights import load_faceboxes

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--augmentations", type=int, default=3)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("FROSTED_SHARED", REPO.parent / "shared")))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = parser.parse_args()
    tune_cpu_runtime()
    model = load_faceboxes(None)
    labels = args.shared / "data/faces/mitcmu/labels.json"
    images = labelled_from_coco(labels, labels.parent / "images", 10, [1, 2, 3, 4, 5])
    rows = []
    for tune_tail in (False, True):
        config = FitConfig(alpha=0.2, task="distill", input_size=InputSize(), epochs=args.epochs, batch_size=8,
                           augmentations=args.augmentations, tune_tail=tune_tail, seed=0)
        started = time.perf_counter()
        data = build_training_set(model, images, config)
        cache_seconds = time.perf_counter() - started
        epoch_times: list[float] = []
        for _ in range(args.epochs):  # one-epoch fits on the same cache: each is exactly one epoch's work
            one = dataclasses.replace(config, epochs=1)
            t0 = time.perf_counter()
            fit_profile(model, data, one)
            epoch_times.append(time.perf_counter() - t0)
        rows.append({"noise_aware_tail": tune_tail, "images": len(images), "samples": len(data.activations),
                     "cache_seconds": round(cache_seconds, 1),
                     "epoch_seconds_median": round(statistics.median(epoch_times), 2),
                     "epoch_seconds": [round(t, 2) for t in epoch_times],
                     "steps_per_epoch": -(-len(data.activations) // config.batch_size)})
    result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"torch {torch.__version__}, {torch.get_num_threads()} threads", "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit.json").write_text(json.dumps(result, indent=1))
    lines = [f"# fit-noise time ({result['machine']}, {result['date']})", "",
             "| noise-aware tail | images | cached samples (views) | caching activations s | s per epoch (median) "
             "| steps per epoch |", "|---|---|---|---|---|---|"]
    lines += [f"| {'yes' if r['noise_aware_tail'] else 'no'} | {r['images']} | {r['samples']} | {r['cache_seconds']} "
              f"| {r['epoch_seconds_median']} | {r['steps_per_epoch']} |" for r in rows]
    table = "\n".join(lines) + "\n"
    (args.out / "fit.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
