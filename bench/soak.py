"""Soak: RTSP cameras through a `frosted edge` agent, gRPC with mutual TLS and a `frosted tail`, for minutes,
with one camera and the tail restarted mid-run; do memory, descriptors, threads and tasks stay flat?

    OMP_NUM_THREADS=1 FROSTED_WEIGHTS=/path/FaceBoxesProd.pth python bench/soak.py [--minutes 10]

Real parts only, each in its own process, as a user starts them: ``--cameras`` gst-rtsp-server cameras (a still
of scikit-image's astronaut, H.264, 320x240 at 5 fps: light, since the rig shares the cores with what it
measures), one `frosted tail` and one `frosted edge` over loopback with throwaway mutual-TLS certificates.

Every ``--sample-seconds`` the agent and the tail are sampled: RSS, threads (``/proc/PID/status``), open file
descriptors (``/proc/PID/fd``), and asyncio tasks (their ``frosted_edge_asyncio_tasks`` /
``frosted_tail_asyncio_tasks`` gauges, scraped from /metrics after the /proc reads, so the scrape's own
connection and handler thread are not counted). Time 0 is the moment every camera has its first answer.

Mid-run (`CAMERA_RESTART_AT`, `TAIL_RESTART_AT` of the run): camera 0's RTSP server is SIGKILLed and started
again on its port, then the tail is SIGKILLed and started again on its port. A restart's recovery is from the
restarted process being ready (the RTSP server's READY, the tail's "tail listening") to the first answered frame
after it: of that camera, and for the tail of every camera (the verdict takes the slowest); an answer's time is
its ``capture_time`` plus its ``end_to_end`` latency in the agent's JSON lines.

Verdicts (`judge`), each process life judged on its own (the restarted tail is a new process):
- RSS flat: after warm-up (``--warmup-seconds`` from time 0, or from a restarted tail's ready), every sample within
  ±5 % of the reference, the median of the first three samples after warm-up (a leak shows as drift from the
  start; a mid-run median would halve it). The table also gives the least-squares RSS trend after warm-up
  (MiB/min), not a verdict: ten minutes cannot tell a slow leak from an allocator settling.
- No growth in fds, threads, tasks: the median of the last third of the post-warm-up samples is not above the
  median of the first third (medians: a restart's transient spike or dip does not count, a leaked one does).
- Restarts recovered within 2 s.
- No frame older than the keep-latest slot allows. The slot holds one frame and a newer one replaces it, so a
  frame taken for compute is at most one frame interval old, plus the hand-off from the decode thread; a frame
  older than that waited behind a newer one, i.e. a queue. Per answered frame, its age when taken is bounded
  from above by ``end_to_end - (preprocess + head + noise + encode + uplink_round_trip)`` from its JSON line:
  capture to the start of compute, plus the two thread hand-offs around the compute (to the compute thread and
  back to the event loop), sub-millisecond on an idle machine and longer when the cores are contended, so the
  check can only overstate an age. The bound is two frame intervals (one for the slot, one of allowance for
  the decode thread's hand-off on a busy loop); the frames over it are listed. And the accounting closes: per camera,
  frames decoded (the last answered ``frame_index`` + 1) equal answered + dropped (keep-latest) + lost (uplink),
  from the agent's end-of-run summary, to within the frames a closing connection or the drain may hold.

Writes ``soak.json`` (settings, every sample, events, figures, verdicts), ``soak.md`` (the tables) and
``soak.png`` (memory over time) under ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facesplit.noise import DEFAULT_PROFILE  # noqa: E402
from tests.rig.servers import RtspServer, free_port  # noqa: E402

PROFILE = DEFAULT_PROFILE  # the soak runs what ships
CAMERA_RESTART_AT = 0.3  # fractions of the run (after time 0) at which the restarts start
TAIL_RESTART_AT = 0.5
RECOVERY_TARGET_SECONDS = 2.0
RSS_TOLERANCE = 0.05
REFERENCE_SAMPLES = 3  # the RSS reference: median of the first samples after warm-up
MIN_JUDGED_SAMPLES = 6  # fewer samples after warm-up than this: the life is shown, not judged
RECOVERY_DEADLINE_SECONDS = 60.0  # how long a restart waits for its first answer before it is called failed
START_DEADLINE_SECONDS = 180.0  # tail and agent import torch and load the model: slow on a busy machine
COUNTED = ("fds", "threads", "tasks")
SLOT_STAGES = ("preprocess", "head", "noise", "encode", "uplink_round_trip")
TASK_GAUGES = {"agent": "frosted_edge_asyncio_tasks", "tail": "frosted_tail_asyncio_tasks"}
SUMMARY_LINE = re.compile(r"camera (\S+): (\d+) frames answered, (\d+) dropped \(keep-latest\), (\d+) lost")


# ----------------------------------------------------------------------------------------------- settings, samples
@dataclass(frozen=True)
class SoakSettings:
    seconds: float = 600.0
    sample_seconds: float = 5.0
    warmup_seconds: float = 60.0
    cameras: int = 4
    width: int = 320
    height: int = 240
    fps: int = 5
    threads: int = 1  # torch threads of the agent and of the tail


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since time 0 (negative: start-up)
    role: str  # "agent" or "tail"
    pid: int
    rss_mib: float
    fds: int
    threads: int
    tasks: int | None  # None: the gauge could not be scraped
    cpu_seconds: float  # user + system, since the process started


@dataclass
class Restart:
    what: str  # "camera cam0" or "tail"
    killed_at: float  # seconds since time 0
    ready_at: float | None = None
    first_answers: dict[str, float | None] = field(default_factory=dict)  # camera -> seconds since time 0

    @property
    def recovery_seconds(self) -> float | None:
        """Ready to the first answer after it (the slowest camera's); None: some camera never answered again."""
        if self.ready_at is None or not self.first_answers or None in self.first_answers.values():
            return None
        return max(self.first_answers.values()) - self.ready_at


# ------------------------------------------------------------------------------------------------------ verdicts
@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: not judged (too few samples after warm-up)
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


def after_warmup(times: Sequence[float], values: Sequence[float | None], warmup_end: float) -> list[float]:
    """The values sampled at or after ``warmup_end``, as plain floats; missing ones (None) left out."""
    return [float(v) for t, v in zip(times, values, strict=True) if t >= warmup_end and v is not None]


def rss_flat(times: Sequence[float], rss: Sequence[float], warmup_end: float,
             tolerance: float = RSS_TOLERANCE) -> Verdict:
    """Every sample after warm-up within ±``tolerance`` of the reference (median of the first few after it)."""
    kept = after_warmup(times, rss, warmup_end)
    if len(kept) < MIN_JUDGED_SAMPLES:
        return Verdict(None, f"{len(kept)} samples after warm-up: not judged")
    reference = statistics.median(kept[:REFERENCE_SAMPLES])
    low, high = min(kept) / reference - 1, max(kept) / reference - 1
    drift = statistics.median(kept[-REFERENCE_SAMPLES:]) / reference - 1
    ok = -tolerance <= low and high <= tolerance
    return Verdict(ok, f"{100 * low:+.1f} % .. {100 * high:+.1f} % of {reference:.0f} MiB (end {100 * drift:+.1f} %)",
                   {"reference_mib": reference, "low": low, "high": high, "drift": drift})


def slope_per_minute(times: Sequence[float], values: Sequence[float], warmup_end: float) -> float | None:
    """Least-squares trend of the samples after warm-up, per minute: not a verdict, but ten minutes cannot tell a
    slow leak from an allocator settling, and the trend says which way the run leaned."""
    pairs = [(t, float(v)) for t, v in zip(times, values, strict=True) if t >= warmup_end]
    if len(pairs) < MIN_JUDGED_SAMPLES:
        return None
    t_mean = statistics.fmean(t for t, _ in pairs)
    v_mean = statistics.fmean(v for _, v in pairs)
    spread = sum((t - t_mean) ** 2 for t, _ in pairs)
    return 60 * sum((t - t_mean) * (v - v_mean) for t, v in pairs) / spread


def no_growth(times: Sequence[float], values: Sequence[float | None], warmup_end: float) -> Verdict:
    """The median of the last third of the samples after warm-up is not above that of the first third."""
    kept = after_warmup(times, values, warmup_end)
    if len(kept) < MIN_JUDGED_SAMPLES:
        return Verdict(None, f"{len(kept)} samples after warm-up: not judged")
    third = len(kept) // 3
    first, last = statistics.median(kept[:third]), statistics.median(kept[-third:])
    return Verdict(last <= first, f"{first:g} -> {last:g} (range {min(kept):g}-{max(kept):g})",
                   {"first": first, "last": last, "min": min(kept), "max": max(kept)})


def recovered(restart: Restart, target: float = RECOVERY_TARGET_SECONDS) -> Verdict:
    seconds = restart.recovery_seconds
    if seconds is None:
        return Verdict(False, "no answer after the restart")
    return Verdict(seconds <= target, f"{seconds:.2f} s (target {target:g} s)", {"seconds": seconds})


def slot_age_ms(record: dict) -> float:
    """A frame's age when it was taken from the keep-latest slot for compute: capture to the start of compute."""
    latency = record["latency_ms"]
    return latency["end_to_end"] - sum(latency[stage] for stage in SLOT_STAGES)


def frames_fresh(records: Sequence[dict], fps: float, zero: float = 0.0) -> Verdict:
    """No answered frame was older, when taken, than two frame intervals (the slot's one, plus one of hand-off).
    The figures list the first frames over the bound: (capture time since ``zero``, age ms)."""
    bound = 2000.0 / fps
    if not records:
        return Verdict(False, "no answered frames")
    ages = sorted(slot_age_ms(r) for r in records)
    over = [(round(r["capture_time"] - zero, 2), round(slot_age_ms(r), 1)) for r in records
            if slot_age_ms(r) > bound]
    p50, p99 = ages[len(ages) // 2], ages[min(len(ages) - 1, int(0.99 * len(ages)))]
    where = "; over at " + ", ".join(f"{t:g} s ({age:.0f} ms)" for t, age in over[:5]) if over else ""
    return Verdict(not over, f"{len(over)} of {len(ages)} over {bound:.0f} ms (p50 {p50:.0f}, p99 {p99:.0f}, "
                   f"max {ages[-1]:.0f} ms){where}",
                   {"bound_ms": bound, "over": len(over), "p50_ms": p50, "p99_ms": p99, "max_ms": ages[-1],
                    "over_frames": over[:50]})


def frames_accounted(decoded: int, answered: int, dropped: int, lost: int, slack: int) -> Verdict:
    """Every decoded frame answered or counted (dropped by keep-latest, lost in the uplink), to within ``slack``:
    frames pending in a connection's hand-off when it closed, and those the drain at the end left untaken."""
    unaccounted = decoded - (answered + dropped + lost)
    return Verdict(abs(unaccounted) <= slack, f"{decoded} decoded, {answered} answered + {dropped} dropped + "
                   f"{lost} lost: {unaccounted:+d} (slack {slack})", {"unaccounted": unaccounted})


# -------------------------------------------------------------------------------------------------------- probes
def process_stats(pid: int) -> tuple[float, int, int, float]:
    """(RSS MiB, open fds, threads, CPU seconds) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return rss_kib / 1024, fds, threads, cpu


def scrape_value(port: int, name: str) -> float | None:
    """The value of an unlabelled gauge on a /metrics page; None when the page or the gauge is not there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


class AnswerLog:
    """The agent's JSON lines, read as they are written: each answered frame's record and its answer time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict] = []
        self._offset = 0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            if not self.path.exists():
                return
            with open(self.path, encoding="utf-8") as lines:
                lines.seek(self._offset)
                while (line := lines.readline()).endswith("\n"):  # a partial last line waits for its end
                    self.records.append(json.loads(line))
                    self._offset = lines.tell()

    def first_answer(self, camera: str, *, answered_after: float = 0.0, captured_after: float = 0.0
                     ) -> float | None:
        """Unix time of ``camera``'s first answer given after ``answered_after`` to a frame captured after
        ``captured_after``; None if there is none yet."""
        self.refresh()
        times = [answer_time(r) for r in self.records
                 if r["camera"] == camera and r["capture_time"] > captured_after]
        later = [t for t in times if t > answered_after]
        return min(later) if later else None


def answer_time(record: dict) -> float:
    return record["capture_time"] + record["latency_ms"]["end_to_end"] / 1000


def wait_for(condition: Callable[[], object], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ----------------------------------------------------------------------------------------------------------- rig
class SoakRig:
    """Cameras, tail and agent as processes; the tail restartable on its port."""

    def __init__(self, settings: SoakSettings, workdir: Path) -> None:
        import cv2

        from facesplit.images import sample_image
        from frosted_wire.certs import throwaway_certificates

        self.settings = settings
        self.workdir = workdir
        self.certs = throwaway_certificates(workdir / "tls")
        still = workdir / "astronaut.png"
        cv2.imwrite(str(still), sample_image("astronaut"))
        self.cameras = [RtspServer(still, settings.width, settings.height, fps=settings.fps)
                        for _ in range(settings.cameras)]
        self.camera_ids = [f"cam{i}" for i in range(settings.cameras)]
        self.tail_port, self.tail_metrics, self.agent_metrics = free_port(), free_port(), free_port()
        self.answers = AnswerLog(workdir / "boxes.jsonl")
        self.tail: subprocess.Popen[str] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.agent_log = workdir / "agent.log"

    def start_tail(self) -> None:
        from tests.tail_helpers import start_tail_process

        certs = self.certs
        self.tail, _ = start_tail_process(
            self.tail_port, "--metrics-port", str(self.tail_metrics), "--noise", PROFILE,
            "--threads", str(self.settings.threads), "--tls-cert", str(certs.server_cert),
            "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca))

    def kill_tail(self) -> None:
        assert self.tail is not None
        self.tail.kill()  # SIGKILL: a crash, not a drain
        self.tail.wait()

    def start_agent(self) -> None:
        config = self.workdir / "cameras.yaml"
        config.write_text(json.dumps({  # JSON is YAML
            "tail": {"address": f"127.0.0.1:{self.tail_port}",
                     "tls": {"ca": str(self.certs.ca), "cert": str(self.certs.client_cert),
                             "key": str(self.certs.client_key)}},
            "cameras": [{"id": c, "url": s.url} for c, s in zip(self.camera_ids, self.cameras, strict=True)],
            "noise": {"profile": PROFILE}, "model": {"threads": self.settings.threads},
            "metrics": {"port": self.agent_metrics}, "output": str(self.answers.path)}))
        with open(self.agent_log, "wb") as log:  # a file, not a pipe nobody drains
            self.agent = subprocess.Popen([sys.executable, "-m", "frosted", "edge", "--config", str(config)],
                                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())

    def start(self) -> None:
        for camera in self.cameras:
            camera.start()
        self.start_agent()  # it waits for the tail itself: both import torch at once
        self.start_tail()

    def stop_agent(self) -> str:
        """SIGTERM (a drain: the agent prints its summary), then its log."""
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        return self.agent_log.read_text(errors="replace")

    def close(self) -> None:
        self.stop_agent()
        if self.tail is not None and self.tail.poll() is None:
            self.tail.terminate()
            try:
                self.tail.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_tail()
        for camera in self.cameras:
            camera.close()

    def processes(self) -> dict[str, tuple[subprocess.Popen, int]]:
        """Role -> (live process, its metrics port)."""
        alive = {"agent": (self.agent, self.agent_metrics), "tail": (self.tail, self.tail_metrics)}
        return {role: (p, port) for role, (p, port) in alive.items() if p is not None and p.poll() is None}


class Sampler(threading.Thread):
    """Samples the rig's processes every ``period`` seconds until stopped."""

    def __init__(self, rig: SoakRig, period: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.rig, self.period = rig, period
        self.zero: float | None = None  # unix time of time 0, once known; samples before it are start-up
        self.started_at = time.time()
        self.samples: list[tuple[float, str, int, tuple[float, int, int, float], float | None]] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.sample_once()
            self._stopping.wait(self.period)

    def sample_once(self) -> None:
        for role, (process, port) in self.rig.processes().items():
            now = time.time()
            try:
                stats = process_stats(process.pid)  # /proc first: the scrape adds a connection and a thread
            except (FileNotFoundError, ProcessLookupError):
                continue  # it died between the check and the read (a restart)
            tasks = scrape_value(port, TASK_GAUGES[role])
            self.samples.append((now, role, process.pid, stats, tasks))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)

    def as_samples(self, zero: float) -> list[Sample]:
        return [Sample(round(now - zero, 2), role, pid, round(stats[0], 2), stats[1], stats[2],
                       None if tasks is None else int(tasks), round(stats[3], 2))
                for now, role, pid, stats, tasks in self.samples]


# ---------------------------------------------------------------------------------------------------------- run
@dataclass
class SoakRun:
    settings: SoakSettings
    samples: list[Sample]
    restarts: list[Restart]
    records: list[dict]  # the agent's JSON lines
    summary: dict[str, dict[str, int]]  # camera -> answered, dropped, lost (the agent's end-of-run summary)
    lives: dict[str, dict]  # "agent" / "tail" / "tail (restarted)" -> pid, warm-up end (seconds since time 0)
    source_reconnects: dict[str, int]
    zero_unix: float
    pressure: dict[str, float]


def cpu_pressure_total() -> float | None:
    """Microseconds some runnable task waited for a CPU, machine-wide (/proc/pressure/cpu), if the kernel has it."""
    try:
        found = re.search(r"some .*total=(\d+)", Path("/proc/pressure/cpu").read_text())
    except OSError:
        return None
    return float(found.group(1)) if found else None


def run_soak(settings: SoakSettings, workdir: Path, progress: Callable[[str], None] = print) -> SoakRun:
    """Start the rig, soak for ``settings.seconds`` after every camera answers, restart a camera and the tail
    on the way, and return what was measured (`judge` turns it into verdicts)."""
    rig = SoakRig(settings, workdir)
    sampler = Sampler(rig, settings.sample_seconds)
    restarts: list[Restart] = []
    pressure_before, load_before = cpu_pressure_total(), os.getloadavg()
    try:
        rig.start()
        sampler.start()
        progress("cameras, tail and agent started; waiting for every camera's first answer")
        if not wait_for(lambda: all(rig.answers.first_answer(c) for c in rig.camera_ids), START_DEADLINE_SECONDS):
            raise RuntimeError("not every camera was answered within "
                               f"{START_DEADLINE_SECONDS:g} s:\n{rig.agent_log.read_text()[-2000:]}")
        zero = time.time()
        end = zero + settings.seconds
        progress(f"time 0: all {settings.cameras} cameras answered; soaking {settings.seconds:g} s")

        def since(unix: float | None) -> float | None:
            return None if unix is None else round(unix - zero, 3)

        # camera 0: SIGKILL and start again on its port
        time.sleep(max(0.0, zero + CAMERA_RESTART_AT * settings.seconds - time.time()))
        camera = rig.cameras[0]
        restart = Restart(f"camera {rig.camera_ids[0]}", since(time.time()))
        camera.restart()
        restart.ready_at = since(camera.ready_at)
        assert camera.ready_at is not None
        # only the new server's frames count: captured after it was ready (one decoded before the kill may
        # still be answered after it)
        ready = camera.ready_at
        wait_for(lambda: rig.answers.first_answer(rig.camera_ids[0], captured_after=ready), RECOVERY_DEADLINE_SECONDS)
        restart.first_answers[rig.camera_ids[0]] = since(rig.answers.first_answer(rig.camera_ids[0],
                                                                                  captured_after=ready))
        restarts.append(restart)
        progress(f"{restart.what} restarted: recovery {restart.recovery_seconds} s")

        # the tail: SIGKILL and start again on its port
        time.sleep(max(0.0, zero + TAIL_RESTART_AT * settings.seconds - time.time()))
        killed = time.time()
        restart = Restart("tail", since(killed))
        first_tail = rig.tail
        rig.kill_tail()
        rig.start_tail()
        ready = time.time()
        restart.ready_at = since(ready)
        tail_life = {"pid": rig.tail.pid if rig.tail else None, "warmup_end": since(ready) + settings.warmup_seconds}
        # an answer given after the kill comes from the new tail
        wait_for(lambda: all(rig.answers.first_answer(c, answered_after=killed) for c in rig.camera_ids),
                 RECOVERY_DEADLINE_SECONDS)
        restart.first_answers = {c: since(rig.answers.first_answer(c, answered_after=killed)) for c in rig.camera_ids}
        restarts.append(restart)
        progress(f"tail restarted: recovery {restart.recovery_seconds} s")

        time.sleep(max(0.0, end - time.time()))
        sampler.stop()
        agent_pid = rig.agent.pid if rig.agent else None
        agent_log = rig.stop_agent()
    finally:
        sampler.stop()
        rig.close()
    rig.answers.refresh()
    summary = {m.group(1): {"answered": int(m.group(2)), "dropped": int(m.group(3)), "lost": int(m.group(4))}
               for m in SUMMARY_LINE.finditer(agent_log)}
    reconnects = {c: agent_log.count(f"{s.url}: disconnected") for c, s in zip(rig.camera_ids, rig.cameras,
                                                                                strict=True)}
    pressure_after = cpu_pressure_total()
    elapsed = time.time() - sampler.started_at
    pressure = {"load_before": load_before[0], "load_after": os.getloadavg()[0]}
    if pressure_before is not None and pressure_after is not None:
        pressure["cpu_some_share"] = round((pressure_after - pressure_before) / 1e6 / elapsed, 3)
    lives = {"agent": {"pid": agent_pid, "warmup_end": settings.warmup_seconds},
             "tail": {"pid": first_tail.pid if first_tail else None, "warmup_end": settings.warmup_seconds},
             "tail (restarted)": tail_life}
    return SoakRun(settings, sampler.as_samples(zero), restarts, rig.answers.records, summary, lives, reconnects,
                   zero, pressure)


# ------------------------------------------------------------------------------------------------------- judging
def judge(run: SoakRun) -> dict:
    """Every verdict of a run, as JSON-able figures; ``passed`` is all of them (judged ones) together."""
    settings = run.settings
    lives: dict[str, dict] = {}
    for name, life in run.lives.items():
        series = [s for s in run.samples if s.pid == life["pid"]]
        times = [s.t for s in series]
        warmup_end = life["warmup_end"]
        verdicts = {"rss": rss_flat(times, [s.rss_mib for s in series], warmup_end)}
        for counted in COUNTED:
            verdicts[counted] = no_growth(times, [getattr(s, counted) for s in series], warmup_end)
        lives[name] = {"pid": life["pid"], "warmup_end": warmup_end, "samples": len(series),
                       **{k: asdict(v) for k, v in verdicts.items()}}
    restarts = [{**asdict(r), "recovery_seconds": r.recovery_seconds, "verdict": asdict(recovered(r))}
                for r in run.restarts]
    cameras: dict[str, dict] = {}
    for camera, counts in sorted(run.summary.items()):
        records = [r for r in run.records if r["camera"] == camera]
        decoded = max((r["frame_index"] for r in records), default=-1) + 1
        # per connection, the frame pending in its hand-off at close; and the drain: the slot and the window
        slack = run.source_reconnects.get(camera, 0) + 1 + 2 + 2
        fresh = frames_fresh(records, settings.fps, run.zero_unix)
        accounted = frames_accounted(decoded, counts["answered"], counts["dropped"], counts["lost"], slack)
        cameras[camera] = {**counts, "decoded": decoded, "fresh": asdict(fresh), "accounted": asdict(accounted)}
    judged = [v["ok"] for life in lives.values() for k, v in life.items() if k in ("rss", *COUNTED)]
    judged += [r["verdict"]["ok"] for r in restarts]
    judged += [c[k]["ok"] for c in cameras.values() for k in ("fresh", "accounted")]
    every_camera = set(run.summary) == {f"cam{i}" for i in range(settings.cameras)}
    passed = every_camera and all(ok for ok in judged if ok is not None) and len(restarts) == 2
    return {"passed": passed, "lives": lives, "restarts": restarts, "cameras": cameras}


# -------------------------------------------------------------------------------------------------------- output
def _mark(ok: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "not judged"}[ok]


def markdown(result: dict) -> str:
    s, v = result["settings"], result["verdicts"]
    lines = [f"# Soak: {s['cameras']} RTSP cameras -> `frosted edge` -> gRPC (mutual TLS) -> `frosted tail`", "",
             f"{result['date']}, {result['machine']}; {s['seconds'] / 60:g} min from time 0 (every camera answered), "
             f"sampled every {s['sample_seconds']:g} s; cameras {s['width']}x{s['height']} H.264 at {s['fps']} fps "
             f"(a still, gst-rtsp-server); profile {PROFILE}; {s['threads']} torch thread(s) per process; warm-up "
             f"{s['warmup_seconds']:g} s. {result['machine_note']}", "",
             f"**Overall: {'PASS' if v['passed'] else 'FAIL'}**", "",
             "| process | samples | RSS after warm-up | RSS trend | fds | threads | asyncio tasks |",
             "|---|---|---|---|---|---|---|"]
    for name, life in v["lives"].items():
        series = [x for x in result["samples"] if x["pid"] == life["pid"]]
        slope = slope_per_minute([x["t"] for x in series], [x["rss_mib"] for x in series], life["warmup_end"])
        trend = "—" if slope is None else f"{slope:+.2f} MiB/min"
        cells = [f"{_mark(life[k]['ok'])}: {life[k]['detail']}" for k in ("rss", *COUNTED)]
        lines.append(f"| {name} (pid {life['pid']}) | {life['samples']} | {cells[0]} | {trend} | "
                     + " | ".join(cells[1:]) + " |")
    lines += ["", "| restart | killed at s | ready at s | first answer at s (per camera) | recovery | verdict |",
              "|---|---|---|---|---|---|"]
    for r in v["restarts"]:
        answers = ", ".join(f"{c} {t}" for c, t in r["first_answers"].items())
        lines.append(f"| {r['what']} | {r['killed_at']:.2f} | {r['ready_at']:.2f} | {answers} | "
                     f"{r['verdict']['detail']} | {_mark(r['verdict']['ok'])} |")
    lines += ["", "| camera | answered | dropped (keep-latest) | lost (uplink) | age when taken (bound: 2 frame "
              "intervals) | accounting |", "|---|---|---|---|---|---|"]
    for camera, c in v["cameras"].items():
        lines.append(f"| {camera} | {c['answered']} | {c['dropped']} | {c['lost']} | {_mark(c['fresh']['ok'])}: "
                     f"{c['fresh']['detail']} | {_mark(c['accounted']['ok'])}: {c['accounted']['detail']} |")
    lines += ["", "How each verdict is defined: the docstring of `bench/soak.py`. Memory over time: `soak.png`."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    figure, (memory, counts) = plt.subplots(2, 1, figsize=(10, 8), sharex=True, height_ratios=(3, 2))
    colours = {"agent": "tab:blue", "tail": "tab:orange", "tail (restarted)": "tab:red"}
    for name, life in result["verdicts"]["lives"].items():
        series = [s for s in samples if s["pid"] == life["pid"]]
        if not series:
            continue
        t = [s["t"] for s in series]
        memory.plot(t, [s["rss_mib"] for s in series], color=colours[name], label=f"{name} RSS")
        reference = life["rss"]["figures"].get("reference_mib")
        if reference:
            memory.fill_between([life["warmup_end"], t[-1]], reference * (1 - RSS_TOLERANCE),
                                reference * (1 + RSS_TOLERANCE), color=colours[name], alpha=0.12)
        for counted, style in (("fds", "-"), ("threads", "--"), ("tasks", ":")):
            counts.plot(t, [s[counted] for s in series], style, color=colours[name], label=f"{name} {counted}")
    for axis in (memory, counts):
        axis.axvspan(min(s["t"] for s in samples), result["settings"]["warmup_seconds"], color="grey", alpha=0.1)
        for r in result["verdicts"]["restarts"]:
            axis.axvline(r["killed_at"], color="black", linestyle="--", linewidth=0.8)
    for r in result["verdicts"]["restarts"]:
        memory.annotate(f"{r['what']} restarted", (r["killed_at"], memory.get_ylim()[0]), fontsize=8,
                        rotation=90, va="bottom", ha="right")
    memory.set_ylabel("RSS (MiB)")
    memory.set_title("Soak: memory over time (shaded bands: ±5 % of each reference; grey: warm-up)")
    memory.legend(loc="lower right", fontsize=8)
    counts.set_ylabel("count")
    counts.set_xlabel("seconds since every camera answered")
    counts.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize=7, ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def result_of(run: SoakRun) -> dict:
    verdicts = judge(run)
    share = run.pressure.get("cpu_some_share")
    note = (f"The machine was shared with other jobs throughout: load average {run.pressure['load_before']:.1f} "
            f"before, {run.pressure['load_after']:.1f} after" +
            (f"; some task was waiting for a CPU {100 * share:.0f} % of the time (/proc/pressure/cpu)."
             if share is not None else "."))
    return {"date": datetime.datetime.fromtimestamp(run.zero_unix, datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "machine_note": note, "pressure": run.pressure, "settings": asdict(run.settings),
            "profile": PROFILE, "verdicts": verdicts, "source_reconnects": run.source_reconnects,
            "samples": [asdict(s) for s in run.samples]}


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    (out / "soak.md").write_text(markdown(result))
    plot(result, out / "soak.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length after every camera answered")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--fps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the agent and of the tail")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--render", type=Path, metavar="SOAK_JSON",
                        help="only rewrite soak.md and soak.png under --out from a soak.json (no run)")
    args = parser.parse_args()
    if args.render is not None:
        result = json.loads(args.render.read_text())
        write_results(result, args.out)
        print(markdown(result))
        return 0 if result["verdicts"]["passed"] else 1
    if not os.environ.get("FROSTED_WEIGHTS"):
        parser.error("set FROSTED_WEIGHTS to the FaceBoxes checkpoint")
    settings = SoakSettings(seconds=args.minutes * 60, sample_seconds=args.sample_seconds,
                            warmup_seconds=args.warmup_seconds, cameras=args.cameras, fps=args.fps,
                            threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="frosted-soak-") as scratch:
        result = result_of(run_soak(settings, Path(scratch)))
    write_results(result, args.out)
    print(markdown(result))
    return 0 if result["verdicts"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
