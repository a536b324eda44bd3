"""`frosted tail`: the cloud tail, a gRPC server that turns noisy activations into boxes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from prometheus_client import start_http_server

from cloud_tail import metrics
from cloud_tail.models import served_tails
from cloud_tail.server import ServerTls, TailServerConfig, serve
from cloud_tail.service import StreamLimits
from facesplit.detector import load_detector
from facesplit.faceboxes import DEFAULT_SPLIT
from facesplit.noise.shipped import shipped_profiles
from facesplit.postprocess import PostprocessConfig
from facesplit.preprocess import InputSize
from frosted.logs import setup_logging
from frosted.options import model_options

_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.command()
@click.option("--listen", default="127.0.0.1:50051", show_default=True, help="HOST:PORT to serve gRPC on.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--noise", "profiles", multiple=True, metavar="PROFILE",
              help="Serve this noise profile (shipped name or path; repeatable). Default: every shipped profile.")
@click.option("--serve-clean/--no-serve-clean", default=True, show_default=True,
              help="Also serve clean activations (agents run with --no-noise).")
@click.option("--max-batch", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Frames per tail batch, across streams; 1 turns batching off.")
@click.option("--max-delay-ms", type=click.FloatRange(0, 1000), default=4.0, show_default=True,
              help="How long a frame may wait for others to join its batch.")
@click.option("--max-in-flight", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Frames one stream may have queued or computing at once.")
@click.option("--max-message-bytes", type=click.IntRange(1024), default=1 << 20, show_default=True)
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Send back faces scoring at least this.")
@click.option("--tls-cert", type=_FILE, default=None, help="Server certificate (PEM).")
@click.option("--tls-key", type=_FILE, default=None, help="Server private key (PEM).")
@click.option("--tls-client-ca", type=_FILE, default=None,
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--insecure", is_flag=True, help="Serve plaintext gRPC (no TLS).")
@model_options()
def tail(listen: str, metrics_port: int | None, metrics_host: str, profiles: tuple[str, ...], serve_clean: bool,
         max_batch: int, max_delay_ms: float, max_in_flight: int, max_message_bytes: int, score_threshold: float,
         tls_cert: Path | None, tls_key: Path | None, tls_client_ca: Path | None, insecure: bool,
         weights: Path | None, split: str | None, input_size: InputSize, threads: int | None) -> None:
    """Serve the tail: validate, batch across cameras, run the rest of FaceBoxes, answer with boxes."""
    setup_logging()
    if insecure == (tls_cert is not None or tls_key is not None):
        raise click.UsageError("give either --tls-cert and --tls-key, or --insecure for plaintext")
    if not insecure and (tls_cert is None or tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if insecure and tls_client_ca is not None:
        raise click.UsageError("--tls-client-ca needs TLS, not --insecure")
    # each profile is served at the split it was fitted for; --split says where clean activations end
    detector = load_detector(str(weights) if weights else None, input_size,
                             PostprocessConfig(score_threshold=score_threshold), threads, split or DEFAULT_SPLIT)
    tails = served_tails(detector, list(profiles) or list(shipped_profiles()), serve_clean)
    tls = None if insecure else ServerTls(tls_cert, tls_key, tls_client_ca)  # type: ignore[arg-type]
    config = TailServerConfig(listen=listen, max_batch=max_batch, max_delay=max_delay_ms / 1000,
                              limits=StreamLimits(max_in_flight, max_message_bytes), tls=tls)
    if metrics_port is not None:
        start_http_server(metrics_port, metrics_host, registry=metrics.REGISTRY)
    for t in tails.values():
        click.echo(f"serving {t.name} (alpha {t.alpha:g}, split {t.detector.split}) fingerprint {t.fingerprint}",
                   err=True)
    asyncio.run(serve(tails, config))
