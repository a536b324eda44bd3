"""bench/soak.py: its verdicts on constructed series (quick), and a short soak on the real rig (RTSP cameras,
`frosted edge`, mutual-TLS gRPC, `frosted tail`, a camera and the tail restarted) whose real samples must
show what the long soak claims: both restarts recovered, no growth in open descriptors, the task gauges read."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.soak import (
    Restart,
    Sample,
    SoakRun,
    SoakSettings,
    frames_accounted,
    frames_fresh,
    judge,
    no_growth,
    recovered,
    rss_flat,
    run_soak,
    slope_per_minute,
    slot_age_ms,
)
from cloud_tail import metrics as tail_metrics
from edge_agent import metrics as edge_metrics

WARMUP = 60.0
TIMES = [float(t) for t in range(0, 600, 5)]  # ten minutes sampled every 5 s


def noisy(level: float, count: int, spread: float, seed: int = 0) -> list[float]:
    return list(level + np.random.default_rng(seed).uniform(-spread, spread, count))


# --------------------------------------------------------------------------------------------------- RSS flat
def test_rss_flat_after_a_warmup_ramp_passes():
    rss = [200 + 2 * t if t < WARMUP else 320 for t in TIMES]  # grows 60 % while warming up, then flat
    rss = [v + n for v, n in zip(rss, noisy(0, len(rss), 3), strict=True)]
    verdict = rss_flat(TIMES, rss, WARMUP)
    assert verdict.ok is True, verdict.detail
    assert abs(verdict.figures["reference_mib"] - 320) < 4


def test_rss_growing_8_percent_after_warmup_fails_even_though_it_stays_near_its_median():
    rss = [400 * (1 + 0.08 * max(0.0, t - WARMUP) / (TIMES[-1] - WARMUP)) for t in TIMES]
    verdict = rss_flat(TIMES, rss, WARMUP)
    assert verdict.ok is False
    assert verdict.figures["high"] == pytest.approx(0.08, abs=0.005)


def test_rss_one_sample_off_by_more_than_5_percent_fails():
    rss = [300.0] * len(TIMES)
    rss[70] = 300 * 0.94
    assert rss_flat(TIMES, rss, WARMUP).ok is False


def test_rss_with_too_few_samples_after_warmup_is_not_judged():
    assert rss_flat([0, 5, 10, 61, 66], [1, 1, 1, 1, 1], WARMUP).ok is None


def test_rss_trend_is_the_least_squares_slope_after_warmup_per_minute():
    rss = [100 + (t if t < WARMUP else 0.01 * t) for t in TIMES]  # steep in warm-up, then 0.6 MiB/min
    assert slope_per_minute(TIMES, rss, WARMUP) == pytest.approx(0.6)
    assert slope_per_minute(TIMES[:5], rss[:5], WARMUP) is None


# -------------------------------------------------------------------------------------------------- no growth
def test_counts_with_a_restart_spike_and_dip_do_not_grow():
    fds = [19] * len(TIMES)
    fds[40:42] = [23, 23]  # a reconnect opens the new connection before the old one is gone
    fds[70:73] = [17, 17, 18]  # a camera down for a few samples
    verdict = no_growth(TIMES, fds, WARMUP)
    assert verdict.ok is True, verdict.detail


def test_one_leaked_descriptor_after_a_restart_is_growth():
    fds = [19 if t < 400 else 20 for t in TIMES]
    verdict = no_growth(TIMES, fds, WARMUP)
    assert verdict.ok is False
    assert (verdict.figures["first"], verdict.figures["last"]) == (19, 20)


def test_a_slow_task_leak_is_growth_though_each_step_is_small():
    tasks = [20 + int(t // 100) for t in TIMES]  # one more task every 100 s
    assert no_growth(TIMES, tasks, WARMUP).ok is False


def test_unscraped_task_counts_are_left_out_not_counted_as_zero():
    tasks = [None if i % 3 == 0 else 21 for i in range(len(TIMES))]
    verdict = no_growth(TIMES, tasks, WARMUP)
    assert verdict.ok is True and verdict.figures["min"] == 21


# --------------------------------------------------------------------------------------------------- restarts
def test_recovery_is_from_ready_to_the_slowest_cameras_first_answer():
    restart = Restart("tail", killed_at=100.0, ready_at=104.0, first_answers={"a": 104.5, "b": 105.7})
    assert restart.recovery_seconds == pytest.approx(1.7)
    assert recovered(restart).ok is True
    late = Restart("tail", killed_at=100.0, ready_at=104.0, first_answers={"a": 104.5, "b": 106.5})
    assert recovered(late).ok is False


def test_a_camera_that_never_answers_again_is_not_recovered():
    restart = Restart("tail", killed_at=100.0, ready_at=104.0, first_answers={"a": 104.5, "b": None})
    assert restart.recovery_seconds is None
    assert recovered(restart).ok is False
    assert recovered(Restart("camera cam0", killed_at=10.0)).ok is False  # never ready


# ---------------------------------------------------------------------------------------- frames and accounting
def record(camera: str, capture_time: float, end_to_end_ms: float, frame_index: int = 0) -> dict:
    latency = {"decode": 2.0, "preprocess": 5.0, "head": 60.0, "noise": 3.0, "encode": 1.0,
               "uplink_round_trip": 50.0, "tail_queue": 1.0, "tail_compute": 40.0, "end_to_end": end_to_end_ms}
    return {"camera": camera, "capture_time": capture_time, "frame_index": frame_index, "latency_ms": latency}


def test_slot_age_is_end_to_end_less_compute_and_round_trip():
    assert slot_age_ms(record("a", 0.0, 200.0)) == pytest.approx(200 - 119)


def test_a_frame_that_waited_over_two_frame_intervals_is_stale():
    fresh = [record("a", 1000.0 + i / 5, 119 + 150) for i in range(50)]  # 150 ms in the slot at 5 fps: fine
    assert frames_fresh(fresh, fps=5).ok is True
    stale = [*fresh, record("a", 1010.0, 119 + 401)]
    verdict = frames_fresh(stale, fps=5, zero=1000.0)
    assert verdict.ok is False
    assert verdict.figures["over_frames"] == [(10.0, 401.0)]
    assert frames_fresh([], fps=5).ok is False


def test_accounting_closes_within_the_slack_only():
    assert frames_accounted(232, 169, 61, 2, slack=6).ok is True
    assert frames_accounted(250, 169, 61, 2, slack=6).ok is False  # 18 frames neither answered nor counted


# ---------------------------------------------------------------------------------------------- judge, together
def constructed_run(tail_fds_after_restart: list[int]) -> SoakRun:
    settings = SoakSettings(seconds=600, sample_seconds=5, warmup_seconds=WARMUP, cameras=1)
    samples = [Sample(t, "agent", 1, 400.0, 19, 31, 21, t / 5) for t in TIMES]
    samples += [Sample(t, "tail", 2, 330.0, 15, 10, 26, t / 5) for t in TIMES if t < 300]
    samples += [Sample(t, "tail", 3, 330.0, fds, 10, 26, t / 5)
                for t, fds in zip([t for t in TIMES if t >= 302], tail_fds_after_restart, strict=False)]
    restarts = [Restart("camera cam0", 180.0, 180.5, {"cam0": 181.2}),
                Restart("tail", 300.0, 302.0, {"cam0": 302.8})]
    records = [record("cam0", 1000.0 + i / 5, 200.0, frame_index=i) for i in range(100)]
    return SoakRun(settings, samples, restarts, records, {"cam0": {"answered": 100, "dropped": 0, "lost": 0}},
                   {"agent": {"pid": 1, "warmup_end": WARMUP}, "tail": {"pid": 2, "warmup_end": WARMUP},
                    "tail (restarted)": {"pid": 3, "warmup_end": 362.0}}, {"cam0": 1}, 1000.0, {})


def test_judge_passes_a_clean_run_and_fails_a_leak_in_the_restarted_tail_alone():
    steady = judge(constructed_run([15] * 60))
    assert steady["passed"] is True, steady
    leaking = judge(constructed_run([15 + i // 10 for i in range(60)]))
    assert leaking["passed"] is False
    assert leaking["lives"]["tail (restarted)"]["fds"]["ok"] is False
    assert leaking["lives"]["tail"]["fds"]["ok"] is True and leaking["lives"]["agent"]["fds"]["ok"] is True


# ----------------------------------------------------------------------------------------------- task gauges
@pytest.mark.parametrize(("metrics", "name"), [(edge_metrics, "frosted_edge_asyncio_tasks"),
                                               (tail_metrics, "frosted_tail_asyncio_tasks")])
async def test_task_gauge_counts_the_loops_live_tasks_when_read_from_another_thread(metrics, name):
    metrics.count_tasks_of(asyncio.get_running_loop())
    read = lambda: asyncio.to_thread(metrics.REGISTRY.get_sample_value, name)  # noqa: E731 - as a scrape does
    before = await read()
    sleepers = [asyncio.create_task(asyncio.sleep(60)) for _ in range(5)]
    during = await read()
    for sleeper in sleepers:
        sleeper.cancel()
    await asyncio.gather(*sleepers, return_exceptions=True)
    assert (during - before, await read()) == (5, before)


# ------------------------------------------------------------------------------------------------ the real rig
@pytest.mark.slow  # four RTSP cameras, an agent and a tail in their own processes, for 40 s
def test_short_soak_recovers_both_restarts_without_descriptor_growth(weights_path, gst_rtsp, tmp_path):
    settings = SoakSettings(seconds=40, sample_seconds=1, warmup_seconds=10)
    run = run_soak(settings, tmp_path)
    verdicts = judge(run)

    camera, tail = run.restarts
    assert camera.what == "camera cam0" and set(camera.first_answers) == {"cam0"}
    assert tail.what == "tail" and set(tail.first_answers) == {f"cam{i}" for i in range(4)}
    for restart in run.restarts:
        assert restart.recovery_seconds is not None, f"{restart.what}: a camera never answered after it"
        assert restart.recovery_seconds >= 0  # answers come after the restarted process was ready
    assert run.lives["tail (restarted)"]["pid"] != run.lives["tail"]["pid"]

    for name in ("agent", "tail"):  # the restarted tail lives too short in 40 s to be judged
        assert verdicts["lives"][name]["fds"]["ok"] is True, (name, verdicts["lives"][name]["fds"])
    for role in ("agent", "tail"):  # the new gauges were read, and count real tasks
        after_zero = [s.tasks for s in run.samples if s.role == role and s.t > 0]
        assert after_zero and all(tasks is not None and tasks > 0 for tasks in after_zero), (role, after_zero)
    for camera_id, counts in verdicts["cameras"].items():  # every frame answered or counted, none unseen
        assert counts["accounted"]["ok"] is True, (camera_id, counts["accounted"])
