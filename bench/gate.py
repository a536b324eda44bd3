"""What the tail's gate (cloud_tail/gate.py) costs: the same traffic through the gate and straight to gRPC's
loopback port behind it, side by side in one run, in one process.

    FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/gate.py [--frames 300] [--rounds 3]

1. Detect round trip: one stream, window 1, the default profile's noisy activation (float16 on the wire), the
   real tail computing each frame; p50/p99 per path. What the gate adds is the difference.
2. The relay alone, over an echo server: a ping-pong of one activation-sized message (p50/p99 round trip), and
   a bulk transfer (MB/s); the gate runs in a child process of its own here, so that its CPU seconds per GB
   relayed (/proc/PID/stat) are the relay's alone.

Rounds alternate which path goes first; each figure is the median over rounds. Writes ``gate.json`` and
``gate.md`` under ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloud_tail.gate import ConnectionGate, bind_listening  # noqa: E402
from cloud_tail.models import served_tails  # noqa: E402
from cloud_tail.server import TailServer, TailServerConfig  # noqa: E402
from facesplit.detector import load_detector  # noqa: E402
from facesplit.noise import DEFAULT_PROFILE  # noqa: E402
from facesplit.noise.shipped import split_for  # noqa: E402
from facesplit.preprocess import InputSize  # noqa: E402
from tests.tail_helpers import frame, noisy_activation, stub_for  # noqa: E402

PATHS = ("gate", "direct")


def percentiles(seconds: list[float]) -> dict[str, float]:
    us = np.array(seconds) * 1e6
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1)}


async def detect_round_trips(port: int, message: Any, frames: int) -> list[float]:
    times = []
    async with stub_for(port, own_connection=True) as stub:
        call = stub.Detect(timeout=600)
        for sequence in range(frames + 10):
            message.sequence = sequence
            started = time.perf_counter()
            await call.write(message)
            await call.read()
            if sequence >= 10:  # the first few warm the connection and the tail
                times.append(time.perf_counter() - started)
        await call.done_writing()
    return times


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 18):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def ping_pong(port: int, size: int, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message, times = os.urandom(size), []
    for _ in range(count + 10):
        started = time.perf_counter()
        writer.write(message)
        await reader.readexactly(size)
        times.append(time.perf_counter() - started)
    writer.close()
    return times[10:]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def bulk(port: int, total: int, relay_pid: int | None) -> dict[str, float]:
    """``total`` bytes echoed back through ``port``; with ``relay_pid``, that process's CPU per GB relayed (each
    byte crosses it twice: there and back)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = os.urandom(1 << 20)
    count = total // len(chunk)

    async def send() -> None:
        for _ in range(count):
            writer.write(chunk)
            await writer.drain()

    cpu, started = cpu_seconds(relay_pid) if relay_pid else 0.0, time.perf_counter()
    await asyncio.gather(send(), reader.readexactly(count * len(chunk)))
    elapsed = time.perf_counter() - started
    writer.close()
    result = {"mb_per_second": round(count * len(chunk) / elapsed / 1e6, 1)}
    if relay_pid:
        relayed = 2 * count * len(chunk)
        result["relay_cpu_seconds_per_gb"] = round((cpu_seconds(relay_pid) - cpu) / (relayed / 1e9), 3)
    return result


def relay_worker(upstream_port: int) -> None:
    """A gate to ``upstream_port`` in this process, its port on stdout, until stdin closes."""
    async def serve() -> None:
        gate = ConnectionGate(bind_listening("127.0.0.1", 0), upstream_port, 16, 16)
        await gate.start()
        print(gate.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await gate.close()

    asyncio.run(serve())


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(float(np.median([r[key] for r in rounds])), 2) for key in rounds[0]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    detector = load_detector(None, InputSize.parse(args.input_size), split=split_for(None, [DEFAULT_PROFILE]))
    tails = served_tails(detector, [DEFAULT_PROFILE], serve_clean=False, runtime="torch", threads=args.threads)
    activation, fingerprint = noisy_activation(detector, DEFAULT_PROFILE)
    message = frame(activation, fingerprint)
    detect: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    relay_rtt: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    relay_bulk: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    server = TailServer(tails, TailServerConfig(listen="127.0.0.1:0"))
    await server.start()
    echo, echo_port = await echo_server()
    relay = await asyncio.create_subprocess_exec(sys.executable, __file__, "--relay-worker", str(echo_port),
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert relay.stdout is not None and relay.stdin is not None
    relay_port = int(await relay.stdout.readline())
    try:
        with tqdm(total=args.rounds * 2, desc="gate vs direct", unit="round") as progress:
            for number in range(args.rounds):
                order = PATHS if number % 2 == 0 else PATHS[::-1]
                for path in order:
                    port = server.port if path == "gate" else server.gate.upstream_port
                    detect[path].append(percentiles(await detect_round_trips(port, message, args.frames)))
                    port = relay_port if path == "gate" else echo_port
                    relay_rtt[path].append(percentiles(await ping_pong(port, message.ByteSize(), args.frames * 10)))
                    relay_bulk[path].append(await bulk(port, args.bulk_mb << 20,
                                                       relay.pid if path == "gate" else None))
                    progress.update()
    finally:
        relay.stdin.close()
        await relay.wait()
        echo.close()
        await server.stop()
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "profile": DEFAULT_PROFILE, "input_size": args.input_size,
            "frame_bytes": message.ByteSize(), "frames": args.frames, "rounds": args.rounds,
            "detect": {path: median_of(detect[path]) for path in PATHS},
            "relay_round_trip": {path: median_of(relay_rtt[path]) for path in PATHS},
            "relay_bulk": {path: median_of(relay_bulk[path]) for path in PATHS},
            "per_round": {"detect": detect, "relay_round_trip": relay_rtt, "relay_bulk": relay_bulk}}


def table(result: dict[str, Any]) -> str:
    d, rt, b = result["detect"], result["relay_round_trip"], result["relay_bulk"]
    lines = [f"# The tail's gate: through it vs straight to gRPC ({result['date']})", "",
             f"{result['machine']}; {result['profile']} at {result['input_size']}, {result['frame_bytes']} bytes "
             f"per frame; {result['frames']} frames x {result['rounds']} rounds (medians over rounds)", "",
             "| measure | gate | direct | gate - direct |", "|---|---|---|---|"]
    for name, key, unit in (("Detect round trip p50", "p50_us", "µs"), ("Detect round trip p99", "p99_us", "µs")):
        lines.append(f"| {name} | {d['gate'][key]:.0f} {unit} | {d['direct'][key]:.0f} {unit} | "
                     f"{d['gate'][key] - d['direct'][key]:+.0f} {unit} |")
    for name, key, unit in (("relay ping-pong p50 (one frame each way)", "p50_us", "µs"),
                            ("relay ping-pong p99", "p99_us", "µs")):
        lines.append(f"| {name} | {rt['gate'][key]:.0f} {unit} | {rt['direct'][key]:.0f} {unit} | "
                     f"{rt['gate'][key] - rt['direct'][key]:+.0f} {unit} |")
    lines.append(f"| bulk echo | {b['gate']['mb_per_second']:.0f} MB/s | {b['direct']['mb_per_second']:.0f} MB/s | "
                 f"x{b['gate']['mb_per_second'] / b['direct']['mb_per_second']:.2f} |")
    per_gb = b["gate"]["relay_cpu_seconds_per_gb"]
    per_frame_us = per_gb * result["frame_bytes"] / 1e9 * 1e6
    lines.append(f"| the gate's CPU per GB relayed (its own process) | {per_gb:.2f} s | - | "
                 f"{per_frame_us:.0f} µs per frame |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-mb", type=int, default=1024)
    parser.add_argument("--input-size", default="1024", help="the profile's own (1024x1024 for the shipped ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--relay-worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay_worker is not None:
        relay_worker(args.relay_worker)
        return
    result = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate.json").write_text(json.dumps(result, indent=1) + "\n")
    text = table(result)
    (args.out / "gate.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
