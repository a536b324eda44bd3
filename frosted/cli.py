"""The `frosted` command: a thin face over the packages, one module per verb in `frosted.commands`."""

from __future__ import annotations

from typing import Any

import click

from facesplit.errors import FrostedError


class FrostedGroup(click.Group):
    """Turns the errors a user can fix into one line on stderr and exit status 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FrostedError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=FrostedGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Frosted: confidential face detection on camera feeds."""


def _register() -> None:
    from frosted.commands import attack, demo, detect, edge, evaluate, fit_noise, profiles, tail, weights

    cli.add_command(attack.attack)
    cli.add_command(demo.demo)
    cli.add_command(detect.detect)
    cli.add_command(edge.edge)
    cli.add_command(evaluate.evaluate)
    cli.add_command(fit_noise.fit_noise)
    cli.add_command(profiles.profiles)
    cli.add_command(tail.tail)
    cli.add_command(weights.weights)


_register()


def main() -> None:
    cli()
