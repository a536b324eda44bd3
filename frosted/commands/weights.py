"""`frosted weights`: fetch and check the FaceBoxes checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from facesplit.weights import (
    OFFICIAL_SHA256,
    OFFICIAL_URL,
    cache_path,
    download_weights,
    load_faceboxes,
    resolve_weights,
    sha256_of,
)


@click.group()
def weights() -> None:
    """Fetch or check the FaceBoxes weights."""


@weights.command()
@click.option("--url", default=OFFICIAL_URL, show_default=True, help="Where to fetch the checkpoint from.")
@click.option("--to", "destination", type=click.Path(path_type=Path), default=None,
              help="Where to save it (default: the user cache, where every verb looks).")
@click.option("--sha256", "expected", default=OFFICIAL_SHA256, show_default=True,
              help="Refuse the file unless its sha256 is this.")
def download(url: str, destination: Path | None, expected: str) -> None:
    """Download the pinned official checkpoint and verify its sha256 before saving it."""
    saved = download_weights(url, destination or cache_path(), expected)
    load_faceboxes(saved)  # a file with the right hash always loads; this guards a custom --sha256
    click.echo(str(saved))


@weights.command()
@click.option("--weights", "path", type=click.Path(path_type=Path), default=None)
def check(path: Path | None) -> None:
    """Load the weights that the other verbs would use and print where they are."""
    found = resolve_weights(path)
    load_faceboxes(found)
    digest = sha256_of(found)
    official = "official" if digest == OFFICIAL_SHA256 else "not the official checkpoint"
    click.echo(f"{found} sha256 {digest} ({official})")
