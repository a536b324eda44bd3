"""`frosted --help` and `frosted VERB --help` answer at once: no verb imports torch (or OpenCV, gRPC, PyAV)
before it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from tests.conftest import REPO

HEAVY = ("torch", "cv2", "grpc", "av", "aiortc", "pydantic", "skimage", "matplotlib", "safetensors")

PROBE = """
import json, sys
from frosted.cli import cli
for argv in [["--help"], *[[verb, "--help"] for verb in sys.argv[1:]], ["weights", "download", "--help"]]:
    code = cli.main(argv, prog_name="frosted", standalone_mode=False)
    assert code in (0, None), (argv, code)
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_help_imports_nothing_heavy():
    probe = PROBE.format(heavy=HEAVY)
    from frosted.cli import VERBS  # every verb, the ones added later included

    result = subprocess.run([sys.executable, "-c", probe, *VERBS], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("argv", [["--help"], ["detect", "--help"], ["edge", "--help"], ["tail", "--help"],
                                  ["demo", "--help"]])
def test_help_is_quick(argv):
    """Quick because it imports nothing heavy (checked above); how quick is bench/'s business, not a bound here."""
    result = subprocess.run([sys.executable, "-m", "frosted", *argv], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr[-2000:]


def test_the_verb_list_matches_each_verbs_own_help():
    """`frosted --help` shows each verb's one-line help without importing it; it must say what the verb says."""
    from frosted.cli import VERBS, cli

    ctx = click.Context(cli)
    for name, verb in VERBS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(300) == click.Command(name, help=verb.help).get_short_help_str(300), name


def test_the_split_names_spelled_out_for_help_are_the_models():
    from facesplit.faceboxes import DEFAULT_SPLIT, SPLITS
    from frosted.options import DEFAULT_SPLIT_NAME, SPLIT_NAMES

    assert (SPLIT_NAMES, DEFAULT_SPLIT_NAME) == (SPLITS, DEFAULT_SPLIT)
