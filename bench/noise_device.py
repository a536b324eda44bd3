"""The noise's cost per batch: the CPU sampler (AES-256-CTR in OpenSSL) vs ChaCha20 in torch ops
(`facesplit.noise.chacha`) on the CPU, and on CUDA where there is a device; beside the torch head's time.

    FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/noise_device.py [--iterations 30] [--compile-cpu]

Shapes: 128x18x32 (split inception3 at 1024x576, the default profile's activation) and 128x32x32 (inception3 at
1024x1024), batch 1 and 32. Each figure is the median over ``--iterations`` draws after warm-up (on CUDA, timed
with CUDA events around the draw, the device synchronised). "draw" is ``stream.normal`` alone; "noise" is the
whole `Obfuscator` (draw, times sigma, plus mu, plus the activation) on a per-channel profile, the default
profile's form. The head is the product's torch head (batch norm fused, channels_last) on the same device, fp32,
to give the noise's share of it: the issue's target is under 5 % on a GPU. ``--compile-cpu`` also times
``torch.compile``'d ChaCha20 on the CPU (its compile takes a minute or two on a busy 2-core machine).

Writes ``noise_device.json`` and ``noise_device.md`` under ``--out`` (bench/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facesplit.detector import SplitDetector
from facesplit.noise.chacha import ChaChaGaussianStream
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.sampler import GaussianStream
from facesplit.noise.streams import NoiseStream, gaussian_stream
from facesplit.weights import load_faceboxes

SPLIT = "inception3"
SHAPES = {"1024x576": (128, 18, 32), "1024x1024": (128, 32, 32)}  # input size -> activation (C, H, W)
BATCHES = (1, 32)
TARGET_SHARE = 0.05  # of the head's time, on a GPU


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, iterations: int) -> dict[str, float]:
    """Median (and p10, p90) milliseconds of ``fn`` on ``device``."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
    deciles = statistics.quantiles(samples, n=10) if len(samples) > 1 else samples * 9
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[-1], "n": iterations}


def flat_profile(shape: tuple[int, int, int], size: str) -> NoiseProfile:
    """A per-channel profile of the right shape (its values do not change the cost)."""
    width, height = (int(v) for v in size.split("x"))
    return NoiseProfile(mu=torch.zeros(shape), sigma=torch.ones(shape), alpha=0.5, input_size=(width, height),
                        head_fingerprint="0" * 64, split=SPLIT)


def torch_head(device: torch.device, weights: Path | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The product's torch head at ``SPLIT`` (fused, channels_last) on ``device``; ``weights`` as
    `load_faceboxes` resolves them."""
    model = SplitDetector(load_faceboxes(weights, SPLIT)).model.to(device)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return model.head(x)

    return run


def model_input(batch: int, size: str, device: torch.device) -> torch.Tensor:
    width, height = (int(v) for v in size.split("x"))
    return torch.rand(batch, 3, height, width, device=device).contiguous(memory_format=torch.channels_last)


def cuda_head_and_draw_ms(batch: int, iterations: int, size: str = "1024x576", device: torch.device | str = "cuda",
                          weights: Path | None = None) -> dict[str, float]:
    """The product's noise on ``device`` (`gaussian_stream(device)` in an `Obfuscator`) and the fp32 torch head,
    at ``batch``: median ms of each, measured alike."""
    device = torch.device(device)
    shape = SHAPES[size]
    head = torch_head(device, weights)
    x = model_input(batch, size, device)
    activation = head(x)
    obfuscate = Obfuscator(flat_profile(shape, size), gaussian_stream(device))
    return {"head_ms": time_ms(lambda: head(x), device, 5, iterations)["median"],
            "draw_ms": time_ms(lambda: obfuscate(activation), device, 5, iterations)["median"]}


def samplers(devices: list[torch.device], compile_cpu: bool) -> list[tuple[str, torch.device, NoiseStream]]:
    found: list[tuple[str, torch.device, NoiseStream]] = []
    for device in devices:
        if device.type == "cpu":
            found.append(("AES-256-CTR (OpenSSL) + Box-Muller", device, GaussianStream()))
        found.append(("ChaCha20 torch ops, eager", device, ChaChaGaussianStream(device)))
        if device.type == "cuda" or compile_cpu:
            found.append(("ChaCha20 torch ops, torch.compile", device, ChaChaGaussianStream(device, compiled=True)))
    return found


def cpu_stall_us() -> int | None:
    """Linux PSI: microseconds some task waited for a CPU (since boot); None where there is no PSI."""
    path = Path("/proc/pressure/cpu")
    return int(path.read_text().splitlines()[0].rsplit("total=", 1)[1]) if path.exists() else None


def run(iterations: int, compile_cpu: bool, head_iterations: int) -> dict[str, Any]:
    stall_before, began = cpu_stall_us(), time.monotonic()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows: list[dict[str, Any]] = []
    heads: dict[tuple[str, str, int], float] = {}
    for device in devices:
        head = torch_head(device)
        for size in SHAPES:
            for batch in BATCHES:
                x = model_input(batch, size, device)
                reps = head_iterations if device.type == "cpu" else iterations
                heads[(device.type, size, batch)] = time_ms(lambda h=head, x=x: h(x), device, 2, reps)["median"]
                print(f"head {device.type} {size} batch {batch}: {heads[(device.type, size, batch)]:.2f} ms",
                      flush=True)
    for name, device, stream in samplers(devices, compile_cpu):
        for size, shape in SHAPES.items():
            obfuscate = Obfuscator(flat_profile(shape, size), stream)
            for batch in BATCHES:
                activation = torch.zeros(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
                draw = time_ms(lambda g=stream, n=(batch, *shape): g.normal(n), device, 3, iterations)
                noise = time_ms(lambda f=obfuscate, a=activation: f(a), device, 3, iterations)
                head_ms = heads[(device.type, size, batch)]
                rows.append({"sampler": name, "device": str(device), "size": size, "shape": list(shape),
                             "batch": batch, "draw_ms": draw, "noise_ms": noise, "head_ms": head_ms,
                             "noise_per_frame_ms": noise["median"] / batch,
                             "noise_share_of_head": noise["median"] / head_ms})
                print(f"{name} {device} {size} batch {batch}: draw {draw['median']:.3f} ms, "
                      f"noise {noise['median']:.3f} ms ({noise['median'] / head_ms:.1%} of the head)", flush=True)
    stall_after = cpu_stall_us()
    # the share of the run some task spent waiting for a CPU: other jobs on the cores skew every figure
    pressure = None if stall_before is None or stall_after is None else \
        (stall_after - stall_before) / 1e6 / (time.monotonic() - began)
    return {"machine": machine(), "iterations": iterations, "head_iterations": head_iterations,
            "cpu_pressure": pressure, "target_share_of_head_on_gpu": TARGET_SHARE, "rows": rows}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def markdown(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "# Noise per batch: AES-CTR on the CPU vs ChaCha20 in torch ops (CPU, CUDA)", "",
        f"{info['cpu_model']}, {info['logical_cpus']} logical CPUs, torch {info['torch']} on "
        f"{info['torch_threads']} thread(s); CUDA: {info['cuda_device'] or 'none on this machine'}; "
        f"{info['date']}. Median of {result['iterations']} draws (the CPU head: of {result['head_iterations']})."
        + ("" if result["cpu_pressure"] is None else
           f" CPU pressure (PSI): some task waited for a core {result['cpu_pressure']:.0%} of the run; "
           "above a few percent, other jobs shared the cores and the CPU figures are rough."),
        "", "draw: `stream.normal` alone; noise: the whole `Obfuscator` (draw, x sigma, + mu, + activation); head: "
        f"the product's torch head at split {SPLIT}, fp32, on the same device. Target on a GPU: noise under "
        f"{TARGET_SHARE:.0%} of the head.", "",
        "| sampler | device | input (activation) | batch | draw ms | noise ms | noise ms / frame | head ms "
        "| noise / head |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        shape = "x".join(str(v) for v in row["shape"])
        lines.append(f"| {row['sampler']} | {row['device']} | {row['size']} ({shape}) | {row['batch']} "
                     f"| {row['draw_ms']['median']:.3f} | {row['noise_ms']['median']:.3f} "
                     f"| {row['noise_per_frame_ms']:.3f} | {row['head_ms']:.2f} | {row['noise_share_of_head']:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--head-iterations", type=int, default=5, help="for the CPU head (slow at batch 32)")
    parser.add_argument("--compile-cpu", action="store_true", help="also time torch.compile'd ChaCha20 on the CPU")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    result = run(args.iterations, args.compile_cpu, args.head_iterations)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noise_device.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "noise_device.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
