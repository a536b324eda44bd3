"""`frosted demo`: the live path end to end in one command, with nothing external to start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from facesplit.noise.shipped import split_for
from facesplit.preprocess import InputSize
from frosted.demo import demo_detector, run_demo
from frosted.logs import setup_logging
from frosted.options import model_options


@click.command()
@click.option("--seconds", type=click.FloatRange(min=0.5), default=4.0, show_default=True,
              help="Length of the clip streamed through the service.")
@click.option("--noise", "profile", default="inception3-alpha-0.4", show_default=True, metavar="PROFILE",
              help="Noise profile the agent applies and the tail serves.")
@click.option("--output", default="-", show_default=True, help="JSON lines of boxes: '-' or a file.")
@model_options()
def demo(seconds: float, profile: str, output: str, weights: Path | None, split: str | None, input_size: InputSize,
         threads: int | None) -> None:
    """Stream a clip made from scikit-image's astronaut photo through edge agent -> gRPC (mTLS) -> tail."""
    setup_logging()
    detector = demo_detector(str(weights) if weights else None, input_size, threads, split_for(split, [profile]))
    summary = asyncio.run(run_demo(detector, profile, seconds, output))
    click.echo("per-stage latency (ms):", err=True)
    click.echo(summary.table(), err=True)
