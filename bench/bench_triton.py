"""Our tail against NVIDIA Triton serving the same tail, on the same CPU, in the same run: frames/s and round
trip (p50, p99) at 1 and 8 camera streams.

    FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/bench_triton.py [--seconds 8] [--rounds 2] [--threads 1]

Both serve the default profile's tail as the same ONNX graph on ONNX Runtime with ``--threads`` intra-op threads:
`frosted tail --runtime onnxruntime` (our gRPC service, its batcher) and the repository `frosted export triton`
writes, in nvidia-pytriton's tritonserver (Triton's dynamic batcher, the graph in ONNX Runtime inside a
python-backend model, the boxes in a second python-backend model, an ensemble around both). Both batch up to 8
frames and wait at most 4 ms for a batch. Each server runs in its own process; the client is the edge agent's
uplink (`edge_agent.uplink.CameraStream`, window 2, the agent's default) on our transport or the Triton one,
each stream sending the astronaut's noisy activation (FP16, what crosses the wire) whenever its window has room.
Rounds alternate the order of the servers, so drift on a busy machine hits both; the figures are per round.
Writes ``triton.json`` and ``triton.md`` under ``--out`` (bench/results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.triton_uplink import TritonTransport  # noqa: E402
from edge_agent.uplink import CameraStream, DetectTransport, UplinkTransport, open_channel  # noqa: E402
from facesplit.detector import load_detector  # noqa: E402
from facesplit.noise import DEFAULT_PROFILE  # noqa: E402
from facesplit.noise.shipped import split_for  # noqa: E402
from tests.rig.servers import free_port  # noqa: E402
from tests.rig.triton import TritonServer  # noqa: E402
from tests.tail_helpers import frame, noisy_activation  # noqa: E402

PROFILE = DEFAULT_PROFILE
STREAMS = (1, 8)
WINDOW = 2


def start_our_tail(port: int, threads: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "frosted", "tail", "--listen", f"127.0.0.1:{port}", "--insecure", "--noise",
               PROFILE, "--runtime", "onnxruntime", "--threads", str(threads), "--max-batch", "8",
               "--max-delay-ms", "4"]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "tail listening" in line:
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"our tail did not start: {process.stderr.read()[-2000:]}")


async def measure(transport: UplinkTransport, streams: int, message: Any, seconds: float, warmup: float
                  ) -> dict[str, Any]:
    """``streams`` streams on ``transport``, each keeping its window full for ``warmup`` + ``seconds``."""
    round_trips: list[float] = []
    batch_sizes: list[int] = []
    counting = False

    def on_answer(_: object, answer: Any, round_trip: float) -> None:
        if counting:
            round_trips.append(round_trip)
            batch_sizes.append(answer.timings.batch_size)

    cameras = [CameraStream(transport, f"bench{i}", on_answer, window=WINDOW, deadline=30) for i in range(streams)]
    runs = [asyncio.create_task(c.run()) for c in cameras]

    async def send(camera: CameraStream) -> None:
        own = type(message)()
        own.CopyFrom(message)  # each stream numbers its own frames
        sequence = 0
        while True:
            if await camera.wait_for_room():
                own.sequence = sequence
                await camera.send(own, None)
                sequence += 1

    senders = [asyncio.create_task(send(c)) for c in cameras]
    try:
        await asyncio.sleep(warmup)
        counting, started = True, time.perf_counter()
        await asyncio.sleep(seconds)
        counting, elapsed = False, time.perf_counter() - started
    finally:
        for task in (*senders, *runs):
            task.cancel()
        await asyncio.gather(*senders, *runs, return_exceptions=True)
    ms = np.array(round_trips) * 1000
    return {"frames": len(ms), "frames_per_second": round(len(ms) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "mean_batch": round(float(np.mean(batch_sizes)), 2) if batch_sizes and any(batch_sizes) else None}


def triton_batches(server: TritonServer, before: dict[int, int]) -> dict[int, int]:
    after = server.batch_sizes(f"{PROFILE}.tail-python")
    return {size: count - before.get(size, 0) for size, count in sorted(after.items()) if count > before.get(size, 0)}


def cpu_pressure() -> str | None:
    path = Path("/proc/pressure/cpu")
    return path.read_text().splitlines()[0] if path.exists() else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    detector = load_detector(None, split=split_for(None, [PROFILE]))
    activation, fingerprint = noisy_activation(detector, PROFILE)
    message = frame(activation, fingerprint)
    work = Path(tempfile.mkdtemp(prefix="bench-triton-"))
    subprocess.run([sys.executable, "-m", "frosted", "export", "triton", "--noise", PROFILE, "--threads",
                    str(args.threads), "--out", str(work / "models")], cwd=REPO, check=True)
    port = free_port()
    ours = start_our_tail(port, args.threads)
    triton = TritonServer(work / "models", models=[PROFILE]).start()
    results: list[dict[str, Any]] = []
    try:
        for round_index in range(args.rounds):
            order = ["ours", "triton"] if round_index % 2 == 0 else ["triton", "ours"]
            for streams in STREAMS:
                for server in order:
                    if server == "ours":
                        transport: UplinkTransport = DetectTransport(open_channel(f"127.0.0.1:{port}", None))
                    else:
                        transport = TritonTransport(open_channel(triton.grpc_address, None), "triton",
                                                    PROFILE)
                    before = triton.batch_sizes(f"{PROFILE}.tail-python")
                    figures = await measure(transport, streams, message, args.seconds, args.warmup)
                    await transport.close()
                    if server == "triton":
                        figures["batches"] = triton_batches(triton, before)
                    row = {"round": round_index + 1, "server": server, "streams": streams, **figures,
                           "cpu_pressure": cpu_pressure()}
                    print(json.dumps(row), file=sys.stderr)
                    results.append(row)
    finally:
        triton.close()
        ours.terminate()
        ours.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return {"profile": PROFILE, "threads": args.threads, "window": WINDOW, "seconds": args.seconds,
            "warmup": args.warmup, "rounds": args.rounds, "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Our tail vs Triton serving the same tail (bench/bench_triton.py)",
        "",
        f"{report['date']}, {report['cpus']} logical CPUs shared with other work; profile `{report['profile']}`, "
        f"the tail's ONNX graph on ONNX Runtime with {report['threads']} intra-op thread(s) in both; max batch 8, "
        f"max delay 4 ms in both; each stream keeps {report['window']} frames in flight (the agent's window); "
        f"{report['seconds']:g} s measured per row after {report['warmup']:g} s warm-up; round trip = frame "
        "written -> boxes read, on the client.",
        "",
        "| round | server | streams | frames/s | p50 ms | p99 ms | batches |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        if row["server"] == "triton":
            total = sum(row.get("batches", {}).values())
            batches = ", ".join(f"{size}: {count}" for size, count in row.get("batches", {}).items())
            batches = f"{batches} ({total} batches)" if total else "-"
            server = "Triton (ensemble, python backend)"
        else:
            batches = f"mean {row['mean_batch']}" if row["mean_batch"] else "-"
            server = "frosted tail"
        lines.append(f"| {row['round']} | {server} | {row['streams']} | {row['frames_per_second']} | "
                     f"{row['p50_ms']} | {row['p99_ms']} | {batches} |")
    lines += ["", "Batches: Triton's from its statistics (size: count, of the tail model, warm-up included); ours, "
              "the mean batch size each measured answer reports."]
    pressures = [float(row["cpu_pressure"].split()[1].split("=")[1]) for row in report["results"]
                 if row.get("cpu_pressure")]
    if pressures:
        low, high = min(pressures), max(pressures)
        lines += ["", f"CPU pressure while measuring (Linux PSI, some avg10): {low:.0f}-{high:.0f} %: the cores "
                  "were shared with other work, so compare the two servers within a round, not the figures across "
                  "machines."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of each server")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triton.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "triton.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
