"""`frosted runtimes`: which runtime, precision and device combinations this machine can run, and why not.

Each answer is `facesplit.runtimes.factory.check_available`'s, the check that making the runtime meets first, so
what this says is what `frosted edge` and `frosted tail` would do. Nothing is exported, calibrated or built.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import click

from frosted.options import (
    check_precision_option,
    device_option,
    json_option,
    precision_option,
    runtime_option,
    write_json,
)

# the distributions that may provide each runtime's library, first found wins (onnxruntime-gpu is the CUDA build)
DISTRIBUTIONS = {"torch": ("torch",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
                 "openvino": ("openvino",), "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")}


def installed_version(runtime: str) -> str | None:
    """The version of ``runtime``'s library as pip installed it, or None. JetPack's TensorRT bindings may come
    without pip's metadata: then the module's own ``__version__``."""
    for distribution in DISTRIBUTIONS[runtime]:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        return str(importlib.import_module(runtime).__version__)
    except (ImportError, AttributeError):
        return None


def combinations(runtime: str) -> list[tuple[str, str]]:
    """Every (precision, device) ``runtime`` runs a head at somewhere; TensorRT's only device is the GPU."""
    from facesplit.runtimes import DEVICES, PRECISIONS, UnknownRuntimeError, check_device, check_precision, runs_on

    found = []
    for device in dict.fromkeys(runs_on(runtime, d) for d in DEVICES):
        for precision in PRECISIONS:
            try:
                check_device(device, runtime)
                check_precision(precision, runtime, device)
            except UnknownRuntimeError:
                continue
            found.append((precision, device))
    return found


def availability(runtime: str, version: str | None, precision: str, device: str,
                 see_device: bool) -> dict[str, Any]:
    """One row: the combination, and whether it runs here (else the one-line reason)."""
    from facesplit.errors import FrostedError
    from facesplit.runtimes.factory import check_available

    row: dict[str, Any] = {"runtime": runtime, "version": version, "precision": precision, "device": device}
    try:
        check_available(runtime, precision, device, see_device)
    except FrostedError as exc:
        return {**row, "available": False, "reason": str(exc)}
    return {**row, "available": True, "reason": None}


@click.command()
@runtime_option(default=None)
@precision_option(default=None)
@device_option(default=None)
@click.option("--libraries-only", is_flag=True,
              help="Check the installed libraries, not that a GPU is visible (an image's build sees none).")
@json_option("One JSON list of the rows (runtime, version, precision, device, available, reason) to FILE "
             "('-': stdout).")
def runtimes(runtime: str | None, precision: str | None, device: str | None, libraries_only: bool,
             json_path: Path | None) -> None:
    """List the runtimes, precisions and devices this machine can run, and why not; with --runtime, --precision
    or --device, only those, failing (exit 1) unless each can run."""
    from facesplit.runtimes import DEFAULT_DEVICE, DEFAULT_PRECISION, RUNTIME_NAMES, runs_on

    if runtime is not None:  # a combination no machine runs is a usage error, as in the verbs that run it
        check_precision_option(precision or DEFAULT_PRECISION, runtime, device or DEFAULT_DEVICE)
    rows = []
    for name in (runtime,) if runtime else RUNTIME_NAMES:
        version = installed_version(name)
        for at, on in combinations(name):
            if precision in (None, at) and (device is None or runs_on(name, device) == on):
                rows.append(availability(name, version, at, on, not libraries_only))
    if json_path is not None:
        write_json(rows, json_path)
    else:
        for row in rows:
            answer = "yes" if row["available"] else f"no: {row['reason']}"
            click.echo(f"{row['runtime']:<12} {row['version'] or '-':<12} {row['precision']:<8} "
                       f"{row['device']:<5} {answer}")
    # asked: whether what was asked runs, an option not given being what the verbs default to (torch alone asks
    # for its CPU float32 head, not for CUDA as well); else the first reason, in one line, and exit 1
    asked = [row for row in rows if row["precision"] == (precision or DEFAULT_PRECISION)
             and row["device"] == runs_on(row["runtime"], device or DEFAULT_DEVICE)]
    missing = [row for row in asked if not row["available"]]
    if (runtime or precision or device) and (missing or not asked):
        raise click.ClickException(missing[0]["reason"] if missing else "no runtime runs that combination")

