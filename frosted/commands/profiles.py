"""`frosted profiles`: the noise profiles that ship with the package."""

from __future__ import annotations

import json

import click

from facesplit.noise.shipped import describe, shipped_profiles


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON list: name, alpha, split, input size, path, ...")
def profiles(as_json: bool) -> None:
    """List the shipped noise profiles (usable by name wherever a PROFILE is asked for)."""
    rows = [describe(path) for path in shipped_profiles().values()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max((len(row["name"]) for row in rows), default=0)
    for row in rows:
        basis = (f"rank {row['rank']}" if row["rank"] else "per channel") + (" x freq" if row["dct"] else "")
        click.echo(f"{row['name']:<{width}} alpha={row['alpha']:<5} {basis:<18} split={row['split']:<10} "
                   f"input={row['input_size']:<10} "
                   f"mean sigma={row['mean_sigma']:<7} {row['path']}")
    if not rows:
        click.echo("no shipped profiles", err=True)
