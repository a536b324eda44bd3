"""`frosted profiles`: the noise profiles that ship with the package."""

from __future__ import annotations

from pathlib import Path

import click

from frosted.options import json_option, write_json


@click.command()
@json_option("One JSON list (name, alpha, split, input size, path, ...) to FILE ('-' or none: stdout).")
def profiles(json_path: Path | None) -> None:
    """List the shipped noise profiles (usable by name wherever a PROFILE is asked for)."""
    # imported here, not at the top: `frosted --help` and `frosted profiles --help` must not wait for torch
    from facesplit.noise.shipped import describe, shipped_profiles

    rows = [describe(path) for path in shipped_profiles().values()]
    if json_path is not None:
        write_json(rows, json_path)
        return
    width = max((len(row["name"]) for row in rows), default=0)
    for row in rows:
        basis = (f"rank {row['rank']}" if row["rank"] else "per channel") + (" x freq" if row["dct"] else "")
        click.echo(f"{row['name']:<{width}} alpha={row['alpha']:<5} {basis:<18} split={row['split']:<10} "
                   f"input={row['input_size']:<10} "
                   f"mean sigma={row['mean_sigma']:<7} {row['path']}")
    if not rows:
        click.echo("no shipped profiles", err=True)
