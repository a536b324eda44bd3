"""`frosted demo`: the live path end to end in one command, with nothing external to start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from facesplit.noise import DEFAULT_PROFILE
from frosted.options import (
    FiniteFloatRange,
    check_outputs,
    deprecated_alias,
    json_option,
    model_options,
    threshold_option,
)

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize


@click.command()
@click.option("--seconds", type=FiniteFloatRange(0.5, 3600), default=4.0, show_default=True,
              help="Length of the clip streamed through the service.")
@click.option("--noise", "profile", default=DEFAULT_PROFILE, show_default=True, metavar="PROFILE",
              help="Noise profile the agent applies and the tail serves.")
@threshold_option("Report faces scoring at least this (the operating threshold of every verb).")
@json_option("Write the JSON lines of boxes here ('-': stdout).", default="-")
@deprecated_alias("--output", "--json", "json_path")
@model_options()
def demo(seconds: float, profile: str, threshold: float, json_path: Path, weights: Path | None, split: str | None,
         input_size: InputSize, threads: int | None) -> None:
    """Stream a clip made from scikit-image's astronaut photo through edge agent -> gRPC (mTLS) -> tail."""
    # imported here, not at the top: `frosted --help` and `frosted demo --help` must not wait for torch
    import asyncio

    from facesplit.noise.shipped import split_for
    from frosted.demo import demo_detector, run_demo
    from frosted.logs import setup_logging

    check_outputs({"--json": json_path})  # before the model loads, as every verb
    setup_logging()
    detector = demo_detector(str(weights) if weights else None, input_size, threads, split_for(split, [profile]),
                             threshold)
    summary = asyncio.run(run_demo(detector, profile, seconds, str(json_path)))
    click.echo("per-stage latency (ms):", err=True)
    click.echo(summary.table(), err=True)
