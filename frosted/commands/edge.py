"""`frosted edge`: the edge agent — cameras in, noisy activations up, boxes out as JSON lines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from frosted.options import (
    SPLIT_NAMES,
    FiniteFloatRange,
    deprecated_alias,
    device_option,
    json_option,
    precision_options,
    runtime_option,
)

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

NO_NOISE_WARNING = ("WARNING: --no-noise: CLEAN activations will leave this site. Anyone who sees the uplink can "
                    "reconstruct the frames. Use only for testing.")
INSECURE_WARNING = ("WARNING: --insecure: activations travel to the tail in plaintext, unauthenticated. Use TLS "
                    "(tail.tls in the config, or --tls-ca) outside a test bench.")


# Each flag's setting in the agent's config: the one table the overrides are built from, and the flag an error
# in a setting is said in terms of (the --source camera's settings come with it)
SETTING_OF = {"tail_address": "tail.address", "insecure": "tail.insecure", "tls_ca": "tail.tls.ca",
              "tls_cert": "tail.tls.cert", "tls_key": "tail.tls.key", "dtype": "tail.dtype", "window": "tail.window",
              "profile": "noise.profile", "no_noise": "noise.disabled", "metrics_port": "metrics.port",
              "preview_port": "preview.port", "json_path": "output", "weights": "model.weights",
              "split": "model.split", "input_size": "model.input_size", "threads": "model.threads",
              "runtime": "model.runtime", "device": "model.device", "precision": "model.precision",
              "calibration": "model.calibration", "source": "cameras.0.url", "camera_id": "cameras.0.id"}


def _flag_for(ctx: click.Context, setting: str) -> str:
    """The flag that sets ``setting`` (a config field, dotted), else the field itself."""
    param = next((name for name, field in SETTING_OF.items() if field == setting), None)
    return next((p.opts[0] for p in ctx.command.params if p.name == param), setting)


def _overrides(**flags: Any) -> dict[str, Any]:
    """Only the flags the user gave, as the config's nested shape; unset flags leave config/env alone."""
    nested: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None or value is False or value == ():
            continue
        *parents, leaf = dotted.split("__")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return nested


def warnings_for(config: AgentConfig) -> list[str]:
    found = ([NO_NOISE_WARNING] if config.noise.disabled else []) + ([INSECURE_WARNING] if config.tail.insecure
                                                                     else [])
    if config.model.precision == "int8" and not config.noise.disabled:
        from facesplit.noise.shipped import resolve_profile
        from facesplit.noise.validation import calibration_caveat

        caveat = calibration_caveat(resolve_profile(config.noise.profile), config.model.calibration)
        if caveat is not None:
            found.append(f"WARNING: {caveat}")
    return found


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="cameras.yaml: tail, cameras, noise, model, metrics (see deploy/cameras.example.yaml).")
@click.option("--source", default=None, help="One camera: an rtsp://, whep://, file or /dev/video URL.")
@click.option("--camera-id", default=None, help="Name of the --source camera (default: camera-1).")
@click.option("--tail", "tail_address", default=None,
              help="HOST:PORT of the cloud tail, or triton://HOST:PORT[/MODEL] for NVIDIA Triton (KServe v2).")
@click.option("--noise", "profile", default=None, metavar="PROFILE", help="Noise profile (shipped name or path).")
@click.option("--no-noise", is_flag=True, help="Send CLEAN activations (testing only; warns loudly).")
@click.option("--insecure", is_flag=True, help="Plaintext gRPC to the tail (testing only; warns loudly).")
@click.option("--tls-ca", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="CA of the tail's certificate.")
@click.option("--tls-cert", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Client certificate (mutual TLS).")
@click.option("--tls-key", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Client key (mutual TLS).")
@click.option("--dtype", type=click.Choice(["float16", "int8"]), default=None, help="Activation wire format.")
@click.option("--window", type=int, default=None, help="Unanswered frames per camera.")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--preview-port", type=int, default=None,
              help="Serve the live preview page (raw frames, boxes, what crossed the wire) on this port, on "
                   "127.0.0.1 unless the config's preview.host says otherwise.")
@json_option("Write the JSON lines of boxes here ('-': stdout; default: the config's output, else stdout).")
@deprecated_alias("--output", "--json", "json_path")
@click.option("--weights", type=click.Path(path_type=Path), default=None, metavar="FILE", help="FaceBoxes checkpoint.")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
              help="Where the head ends (default: the noise profile's split; rdcl with --no-noise).")
@click.option("--input-size", default=None, help="Model input, e.g. 1024 or 1024x576.")
@click.option("--threads", type=int, default=None, help="CPU threads of the runtime.")
@runtime_option(default=None)  # None: the config's model.runtime, else torch
@device_option(default=None)  # None: the config's model.device, else cpu
@precision_options(default=None)  # None: the config's model.precision, else float32
@click.option("--seconds", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Stop after this long (default: until the sources end or Ctrl-C).")
def edge(config_path: Path | None, source: str | None, camera_id: str | None, tail_address: str | None,
         profile: str | None, no_noise: bool, insecure: bool, tls_ca: Path | None, tls_cert: Path | None,
         tls_key: Path | None, dtype: str | None, window: int | None, metrics_port: int | None,
         preview_port: int | None, json_path: Path | None,
         weights: Path | None, split: str | None, input_size: str | None, threads: int | None,
         runtime: str | None, device: str | None, precision: str | None, calibration: Path | None,
         seconds: float | None) -> None:
    """Run the edge agent on the cameras of --config, or on one --source."""
    # imported here, not at the top: `frosted --help` and `frosted edge --help` must not wait for torch
    import asyncio

    from edge_agent.agent import EdgeAgent
    from edge_agent.backend import head_backend
    from edge_agent.config import OverrideError, load_agent_config
    from edge_agent.signals import run_until_signalled
    from edge_agent.sink import JsonLinesSink
    from edge_agent.sources import open_source
    from frosted.logs import setup_logging

    setup_logging()
    if config_path is None and (source is None or tail_address is None):
        raise click.UsageError("give --config cameras.yaml, or --source URL and --tail HOST:PORT")
    if no_noise and profile is not None:
        raise click.UsageError("--no-noise sends clean activations, --noise names a profile: give one of them")
    if camera_id is not None and source is None:
        raise click.UsageError("--camera-id names the --source camera; give --source too")
    cameras = [{"id": camera_id or "camera-1", "url": source}] if source is not None else None
    ctx = click.get_current_context()
    given = {name: value for name, value in ctx.params.items()
             if name in SETTING_OF and name not in ("source", "camera_id")}  # those two are `cameras`
    if given.get("json_path") is not None:
        given["json_path"] = str(given["json_path"])
    overrides = _overrides(cameras=cameras, **{SETTING_OF[name].replace(".", "__"): v for name, v in given.items()})
    try:
        config = load_agent_config(config_path, overrides)
    except OverrideError as exc:
        raise click.UsageError(f"{_flag_for(ctx, exc.field)}: {exc.reason}") from None
    for warning in warnings_for(config):
        click.secho(warning, fg="red", bold=True, err=True)
    _check_output_apart(config, config_path)
    sink = JsonLinesSink(config.output)  # before the model loads: a bad --json fails at once
    for camera in config.cameras:  # and so does a missing file or device, or a URL no source reads
        open_source(camera.url)
    try:
        backend = head_backend(config.model.weights, config.model.input_size, config.model.threads,
                               None if config.noise.disabled else config.noise.profile, config.tail.dtype,
                               config.model.split, config.model.runtime, config.model.precision,
                               config.model.calibration, config.model.device)
        agent = EdgeAgent(config, backend, sink)
        try:
            summary = asyncio.run(run_until_signalled(agent, seconds))
        except (KeyboardInterrupt, asyncio.CancelledError):  # a second stop signal: no drain
            summary = agent.summary()
    finally:
        sink.close()
    click.echo(summary.table(), err=True)
    # a run that answered nothing for a camera did not do its job (a tail never reachable, a source never read):
    # say so in the status, so a script can tell it from a run that processed its files
    silent = list(summary.unanswered)
    if silent:
        more = f" (nor of {len(silent) - 1} more cameras)" if len(silent) > 1 else ""
        raise click.ClickException(f"no frame of camera {silent[0]} was answered{more}: "
                                   f"{summary.unanswered[silent[0]]}")


def _check_output_apart(config: AgentConfig, config_path: Path | None) -> None:
    """The boxes' output is none of the agent's inputs: appended to its config or a TLS key, it would break the
    next start."""
    from facesplit.outputs import OutputError, check_distinct

    tls = config.tail.tls
    noise = [] if config.noise.disabled else [Path(config.noise.profile)]
    inputs = [p for p in (config_path, tls.ca, tls.cert, tls.key, config.model.weights, config.model.calibration)
              if p is not None] + noise + [Path(camera.url) for camera in config.cameras if "://" not in camera.url]
    try:
        check_distinct({"output": Path(config.output)}, inputs)
    except OutputError as exc:
        raise click.UsageError(str(exc)) from None
