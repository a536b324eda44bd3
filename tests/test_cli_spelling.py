"""One spelling per idea in every verb (frosted/options.py says which): walks each verb's click options."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from frosted.cli import VERBS, cli
from frosted.options import DEFAULT_THRESHOLD, FiniteFloatRange

# Old spellings: hidden deprecated aliases at most, never in --help.
OLD = ("--output", "--to", "--score-threshold", "--draw")

# Verbs whose modules other work owns, with what they still spell the old way; drop an entry once it is fixed
# (a fixed verb passes anyway: only violations not listed here fail).
PENDING: dict[str, set[str]] = {}


def commands() -> dict[str, click.Command]:
    """Every runnable command, by its words after `frosted`."""
    ctx = click.Context(cli)
    found: dict[str, click.Command] = {}

    def walk(words: str, command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(f"{words} {name}", command.get_command(ctx, name))
        else:
            found[words] = command

    for name in VERBS:
        walk(name, cli.get_command(ctx, name))
    return found


def violations(command: click.Command) -> set[str]:
    found = set()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        names = param.opts + param.secondary_opts
        if param.hidden:
            if not (param.name or "").startswith("deprecated_"):
                found.add(f"{names[0]} is hidden but not a deprecated alias")
            continue
        found |= {f"{name} is visible" for name in names if name in OLD}
        if {"--threshold", "--score-threshold"} & set(names) and param.default != DEFAULT_THRESHOLD:
            found.add(f"{names[0]}: default {param.default!r}, not DEFAULT_THRESHOLD")
        if "--seed" in names and param.default is not None:
            found.add(f"--seed: default {param.default!r}, not fresh noise")
        if "--json" in names and not (isinstance(param.type, click.Path) and param.type.allow_dash):
            found.add("--json does not take a FILE ('-': stdout)")
        if "--out" in names and not (isinstance(param.type, click.Path) and param.metavar in ("FILE", "DIR")):
            found.add("--out is neither a FILE nor a DIR")
        if "--json" in names and param.flag_value != "-":
            found.add("--json alone does not mean stdout")
        if isinstance(param.type, click.Path):
            # the kind of path is left to the verb, which checks it with the rest of what it finds on disk (a
            # folder where a file is expected is exit status 1, as a missing file), so the metavar says it
            if not (param.type.file_okay and param.type.dir_okay):
                found.add(f"{names[0]}: click checks its kind (exit status 2), not the verb")
            if param.metavar not in ("FILE", "[FILE]", "DIR", "PATH"):
                found.add(f"{names[0]}: metavar {param.metavar!r}, not FILE, [FILE], DIR or PATH")
        if (isinstance(param.type, click.FloatRange) and not isinstance(param.type, FiniteFloatRange)) \
                or param.type is click.FLOAT:
            found.add(f"{names[0]}: a float that NaN passes (use FiniteFloatRange)")
        if isinstance(param.type, click.IntRange) and {"--threads", "--seed"} & set(names) and param.type.max is None:
            found.add(f"{names[0]}: no upper bound (absurd values crash torch or the generators)")
    return found


@pytest.mark.parametrize("words", sorted(commands()))
def test_options_are_spelled_one_way(words: str) -> None:
    command = commands()[words]
    unexpected = violations(command) - PENDING.get(words, set())
    assert not unexpected, f"frosted {words}: {sorted(unexpected)}"


def test_every_verb_is_walked() -> None:
    assert {"detect", "eval", "edge", "tail", "demo", "fit-noise", "profiles", "weights download", "weights check",
            "attack"} <= set(commands())


@pytest.mark.parametrize("words, argv, dest, value", [
    ("detect", ["--draw", "drawn", "a.jpg"], "out", Path("drawn")),
    ("edge", ["--output", "boxes.jsonl"], "json_path", Path("boxes.jsonl")),
    ("demo", ["--output", "boxes.jsonl"], "json_path", Path("boxes.jsonl")),
    ("tail", ["--score-threshold", "0.25"], "threshold", 0.25),
    ("weights download", ["--to", "w.pth"], "destination", Path("w.pth")),
])
def test_old_spellings_still_work_with_a_note(words: str, argv: list[str], dest: str, value: object,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    command = commands()[words]
    ctx = command.make_context(words, list(argv))
    assert ctx.params[dest] == value
    new = {"out": "--out", "json_path": "--json", "destination": "--out", "threshold": "--threshold"}[dest]
    assert capsys.readouterr().err.splitlines() == [f"Note: {argv[0]} is deprecated; use {new}."]
    # the new spelling wins when both are given
    newer, expected = ("0.9", 0.9) if dest == "threshold" else ("new-one", Path("new-one"))
    both = command.make_context(words, [new, newer, *argv])
    assert both.params[dest] == expected


def test_help_hides_the_old_spellings() -> None:
    for words, command in commands().items():
        if words in PENDING:
            continue
        shown = command.get_help(click.Context(command, info_name=words))
        assert not [old for old in OLD if f"{old} " in shown], words
