"""The `frosted` command: a thin face over the packages, one module per verb in `frosted.commands`."""
import click


@click.group()
def cli() -> None:
    """Frosted: confidential face detection on camera feeds."""


def main() -> None:
    cli()
