"""`frosted tail`: the cloud tail, a gRPC server that turns noisy activations into boxes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cloud_tail.limits import StreamLimits
from frosted.options import (
    FiniteFloatRange,
    check_precision_option,
    deprecated_alias,
    device_option,
    model_options,
    runtime_option,
    serve_precision_option,
    threshold_option,
)

if TYPE_CHECKING:
    from facesplit.preprocess import InputSize

# Not exists=True: click's usage error is three lines; cloud_tail.tls names a missing or bad file in one.
_FILE = click.Path(path_type=Path)
SERVE_CLEAN_WARNING = ("WARNING: --serve-clean: this tail accepts CLEAN activations (agents run with --no-noise). "
                       "Anyone who sees their uplink can reconstruct those cameras' frames. Use only for testing.")


@click.command()
@click.option("--listen", default="127.0.0.1:50051", show_default=True, help="HOST:PORT to serve gRPC on.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--noise", "profiles", multiple=True, metavar="PROFILE",
              help="Serve this noise profile (shipped name or path; repeatable). Default: every shipped profile.")
@click.option("--serve-clean/--no-serve-clean", default=False, show_default=True,
              help="Also serve clean activations (agents run with --no-noise; testing only, warns loudly).")
@click.option("--max-batch", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Frames per tail batch, across streams; 1 turns batching off.")
@click.option("--max-delay-ms", type=FiniteFloatRange(0, 1000), default=4.0, show_default=True,
              help="How long a frame may wait for others to join its batch.")
@click.option("--max-in-flight", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Frames one stream may have queued or computing at once.")
@click.option("--max-message-bytes", type=click.IntRange(1024), default=1 << 20, show_default=True)
@click.option("--max-streams", type=click.IntRange(1, 100_000), default=StreamLimits.max_streams, show_default=True,
              help="Detect streams open at once, all clients together; more get RESOURCE_EXHAUSTED.")
@click.option("--max-streams-per-connection", type=click.IntRange(1, 10_000),
              default=StreamLimits.max_streams_per_connection, show_default=True,
              help="Detect streams on one connection (an agent's cameras); more get RESOURCE_EXHAUSTED.")
@click.option("--max-streams-per-client", type=click.IntRange(1, 100_000),
              default=StreamLimits.max_streams_per_client, show_default=True,
              help="Detect streams of one client address, whatever its connections (raise it for several agents "
                   "behind one NAT); more get RESOURCE_EXHAUSTED, so one client cannot take every stream.")
@click.option("--max-connections", type=click.IntRange(1, 100_000), default=StreamLimits.max_connections,
              show_default=True, help="Client TCP connections at once, counted from the accept (before TLS); "
                                      "the ones over it are closed at once.")
@click.option("--max-connections-per-client", type=click.IntRange(1, 100_000),
              default=StreamLimits.max_connections_per_client, show_default=True,
              help="TCP connections of one client address, counted from the accept (before TLS), so that idle "
                   "sockets from one host cannot take every connection (raise it for many agents behind one NAT).")
@click.option("--idle-timeout-seconds", type=FiniteFloatRange(0, min_open=True),
              default=StreamLimits.idle_timeout_seconds, show_default=True,
              help="Close a stream with DEADLINE_EXCEEDED when it sends no frame (and has none in the tail) "
                   "for this long.")
@threshold_option("Send back faces scoring at least this.")
@deprecated_alias("--score-threshold", "--threshold", "threshold")
@click.option("--tls-cert", type=_FILE, default=None, metavar="FILE", help="Server certificate (PEM).")
@click.option("--tls-key", type=_FILE, default=None, metavar="FILE", help="Server private key (PEM).")
@click.option("--tls-client-ca", type=_FILE, default=None, metavar="FILE",
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--insecure", is_flag=True, help="Serve plaintext gRPC (no TLS).")
@serve_precision_option()
@model_options()
@runtime_option()
@device_option()
def tail(listen: str, metrics_port: int | None, metrics_host: str, profiles: tuple[str, ...], serve_clean: bool,
         max_batch: int, max_delay_ms: float, max_in_flight: int, max_message_bytes: int, max_streams: int,
         max_streams_per_connection: int, max_streams_per_client: int, max_connections: int,
         max_connections_per_client: int, idle_timeout_seconds: float,
         threshold: float, tls_cert: Path | None, tls_key: Path | None, tls_client_ca: Path | None,
         insecure: bool, weights: Path | None, split: str | None, input_size: InputSize, threads: int | None,
         runtime: str, device: str, serve_precisions: tuple[str, ...]) -> None:
    """Serve the tail: validate, batch across cameras, run the rest of FaceBoxes, answer with boxes."""
    # imported here, not at the top: `frosted --help` and `frosted tail --help` must not wait for torch and gRPC
    import asyncio
    import errno

    from prometheus_client import start_http_server

    from cloud_tail import metrics
    from cloud_tail.models import served_tails
    from cloud_tail.server import TailServerConfig, check_limits, serve
    from cloud_tail.tls import ServerTls, load_server_tls
    from facesplit.detector import load_detector
    from facesplit.faceboxes import DEFAULT_SPLIT
    from facesplit.noise.shipped import shipped_profiles
    from facesplit.postprocess import PostprocessConfig
    from frosted.logs import setup_logging
    from frosted_wire.address import check_host_port

    check_precision_option("float32", runtime, device)  # the tail is float32; a --device its runtime lacks
    try:  # first: out of range, gRPC would listen on some other port and say nothing
        check_host_port(listen, listening=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    setup_logging()
    if insecure == (tls_cert is not None or tls_key is not None):
        raise click.UsageError("give either --tls-cert and --tls-key, or --insecure for plaintext")
    if not insecure and (tls_cert is None or tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if insecure and tls_client_ca is not None:
        raise click.UsageError("--tls-client-ca needs TLS, not --insecure")
    tls = None if insecure else ServerTls(tls_cert, tls_key, tls_client_ca)  # type: ignore[arg-type]
    if tls is not None:
        load_server_tls(tls)  # before the model loads: a bad file is one line now, not a broken tail later
    if metrics_port is not None:
        try:
            start_http_server(metrics_port, metrics_host, registry=metrics.REGISTRY)
        except UnicodeError:  # the resolver's, for a label past 63 characters
            raise click.BadParameter(f"{metrics_host[:80]!r} is not a host name", param_hint="--metrics-host"
                                     ) from None
        except OSError as exc:
            taken = "; is another tail running there?" if exc.errno == errno.EADDRINUSE else ""
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port} "
                                       f"({exc.strerror or exc}){taken}") from None
    if serve_clean:
        click.secho(SERVE_CLEAN_WARNING, fg="red", bold=True, err=True)
    # each profile is served at the split it was fitted for; --split says where clean activations end
    if split is not None and not serve_clean:
        raise click.UsageError("--split places the clean tail (--serve-clean); a profile's tail is at the split "
                               "it was fitted for")
    detector = load_detector(str(weights) if weights else None, input_size,
                             PostprocessConfig(score_threshold=threshold), threads, split or DEFAULT_SPLIT)
    tails = served_tails(detector, list(profiles) or list(shipped_profiles()), serve_clean=serve_clean,
                         runtime=runtime, threads=threads, head_precisions=serve_precisions, device=device)
    limits = StreamLimits(max_in_flight=max_in_flight, max_message_bytes=max_message_bytes, max_streams=max_streams,
                          max_streams_per_connection=max_streams_per_connection,
                          max_streams_per_client=max_streams_per_client, max_connections=max_connections,
                          max_connections_per_client=max_connections_per_client,
                          idle_timeout_seconds=idle_timeout_seconds)
    config = TailServerConfig(listen=listen, max_batch=max_batch, max_delay=max_delay_ms / 1000, limits=limits,
                              tls=tls)
    check_limits(tails, limits)  # before the "serving" lines, so a refusal is the only line
    metrics.declare_served(((t.name, t.precision, t.split) for t in tails.values()), runtime, device)

    def say_what_is_served() -> None:
        for t in tails.values():
            on = f"runtime {runtime}" + (f" on {device}" if device != "cpu" else "")
            click.echo(f"serving {t.served_as} (alpha {t.alpha:g}, split {t.split}, {on}) fingerprint "
                       f"{t.fingerprint}", err=True)

    asyncio.run(serve(tails, config, bound=say_what_is_served))
