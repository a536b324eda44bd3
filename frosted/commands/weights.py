"""`frosted weights`: fetch and check the FaceBoxes checkpoint."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import click

from facesplit.urls import redact_url
from frosted.options import deprecated_alias


@click.group()
def weights() -> None:
    """Fetch or check the FaceBoxes weights."""


@weights.command()
@click.option("--url", default=None, help="Where to fetch the checkpoint from (default: the official release).")
@click.option("--out", "destination", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="The file to save it as (default: the user cache, where every verb looks).")
@deprecated_alias("--to", "--out", "destination")
@click.option("--sha256", "expected", default=None,
              help="Refuse the file unless its sha256 is this (default: the official checkpoint's).")
def download(url: str | None, destination: Path | None, expected: str | None) -> None:
    """Download the pinned official checkpoint and verify its sha256 before saving it."""
    if expected is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise click.BadParameter(f"{expected[:80]!r} is not a sha256 (64 hex digits)", param_hint="--sha256")
    expected = expected.lower() if expected else None
    if url is not None and urlsplit(url).scheme.lower() not in ("http", "https"):
        raise click.BadParameter(f"{redact_url(url)[:120]!r}: only http:// and https:// URLs are fetched",
                                 param_hint="--url")
    # imported here, not at the top: `frosted --help` and `frosted weights download --help` must not wait for torch
    from facesplit.weights import OFFICIAL_SHA256, OFFICIAL_URL, cache_path, download_weights

    url = url or OFFICIAL_URL
    expected = expected or OFFICIAL_SHA256
    saved = download_weights(url, destination or cache_path(), expected)  # loaded before it lands
    click.echo(str(saved))


@weights.command()
@click.option("--weights", "path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="The checkpoint to check (default: $FROSTED_WEIGHTS, then the cache).")
def check(path: Path | None) -> None:
    """Load the weights that the other verbs would use and print where they are."""
    from facesplit.weights import OFFICIAL_SHA256, load_faceboxes, resolve_weights, sha256_of

    found = resolve_weights(path)
    load_faceboxes(found)
    digest = sha256_of(found)
    official = "official" if digest == OFFICIAL_SHA256 else "not the official checkpoint"
    click.echo(f"{found} sha256 {digest} ({official})")
