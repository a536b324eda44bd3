"""The `frosted` command: a thin face over the packages, one module per verb in `frosted.commands`.

A verb's module is imported only when that verb is run or asked for its --help: importing every verb up front
imports torch, and made even `frosted --help` wait seconds for it.
"""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import click

from facesplit.errors import ConflictError, FrostedError


@dataclass(frozen=True)
class Verb:
    module: str  # in frosted.commands
    attribute: str  # the click command in it
    help: str  # the line `frosted --help` shows without importing the module; tests check it is the verb's own


VERBS: dict[str, Verb] = {
    "attack": Verb("attack", "attack", "Attack noisy activations (and clean ones) of held-out victims: SSIM/PSNR, "
                   "dlib re-identification, and whether the detector still finds the face, in the reconstructions "
                   "of each attack."),
    "demo": Verb("demo", "demo", "Stream a clip made from scikit-image's astronaut photo through edge agent -> "
                 "gRPC (mTLS) -> tail."),
    "detect": Verb("detect", "detect", 'Find faces in IMAGES; print {"image": ..., "boxes": [[x1, y1, x2, y2, '
                   'score], ...]} per line.'),
    "edge": Verb("edge", "edge", "Run the edge agent on the cameras of --config, or on one --source."),
    "eval": Verb("evaluate", "evaluate", "Per-fold average precision, printed as TR-4928's results block (one per "
                 "IoU)."),
    "export": Verb("export", "export", "Export the head and tail as graphs other runtimes load (the noise stays "
                   "outside the head)."),
    "fit-noise": Verb("fit_noise", "fit_noise", "Fit a noise profile: the frozen head's activations plus learned "
                      "noise that the tail tolerates."),
    "profiles": Verb("profiles", "profiles", "List the shipped noise profiles (usable by name wherever a PROFILE "
                     "is asked for)."),
    "runtimes": Verb("runtimes", "runtimes", "List the runtimes, precisions and devices this machine can run, and "
                     "why not; with --runtime, --precision or --device, only those, failing (exit 1) unless each "
                     "can run."),
    "tail": Verb("tail", "tail", "Serve the tail: validate, batch across cameras, run the rest of FaceBoxes, "
                 "answer with boxes."),
    "weights": Verb("weights", "weights", "Fetch or check the FaceBoxes weights."),
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands: each verb's module is imported on first lookup; listing names imports nothing."""

    def __init__(self, verbs: dict[str, Verb]) -> None:
        self.verbs = verbs
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            verb = self.verbs[name]  # KeyError: no such verb (click's get_command answers None)
            self.loaded[name] = getattr(importlib.import_module(f"frosted.commands.{verb.module}"), verb.attribute)
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self.loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.verbs.keys() | self.loaded.keys()))

    def __len__(self) -> int:
        return len(self.verbs.keys() | self.loaded.keys())


INTERRUPTED = 130  # the shell's status for a command ended by SIGINT (128 + 2), so scripts can tell it apart
TERMINATED = 143  # and by SIGTERM (128 + 15): how `timeout`, `docker stop` and Kubernetes end a process


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C is: the same clean-ups run (no partial output is
    left behind; `facesplit.outputs`). The live verbs' event loops put their own drain in its place while
    they run."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def _echo_to_stdout_failed(exc: OSError) -> bool:
    """Whether ``exc`` came from a verb's `click.echo` to stdout (a full disk, a closed pipe): one net for every
    report line a verb prints, where each call site would otherwise need its own."""
    traceback = exc.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code is click.utils.echo.__code__ and not frame.f_locals.get("err"):
            return True
        traceback = traceback.tb_next
    return False


def _end_progress_bars() -> None:
    """Close the progress bars an error left open, so that its line starts a line of its own (else it is glued
    to the bar's last state, and a log shows the error mid-line)."""
    import sys

    tqdm = sys.modules.get("tqdm")
    if tqdm is None:  # no bar was ever made
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        bar.close()


class FrostedGroup(click.Group):
    """Verbs imported lazily; turns the errors a user can fix into one line on stderr and exit status 1,
    without a traceback, and Ctrl-C into status 130."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(VERBS)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConflictError as exc:  # without the group's usage line: the verb's is the one that would help
            raise click.UsageError(str(exc)) from None
        except FrostedError as exc:
            _end_progress_bars()
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if not _echo_to_stdout_failed(exc):
                raise
            from facesplit.outputs import silence_stdout

            silence_stdout()  # what is still buffered must not fail again, with a traceback, on the way out
            raise click.ClickException(f"stdout: cannot write ({exc.strerror or exc})") from None
        except Terminated:
            _end_progress_bars()
            click.echo("Terminated.", err=True)
            ctx.exit(TERMINATED)
        except KeyboardInterrupt:  # outputs are written whole or not at all (facesplit.outputs): none is half there
            _end_progress_bars()
            click.echo("Interrupted.", err=True)
            ctx.exit(INTERRUPTED)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the help kept in VERBS for verbs not imported yet."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        commands = self.commands
        rows = [(name, (click.Command(name, help=VERBS[name].help)  # shortened the way click shortens it
                        if isinstance(commands, LazyCommands) and name in VERBS and name not in commands.loaded
                        else commands[name]).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=FrostedGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Frosted: confidential face detection on camera feeds."""


def main() -> None:
    # gRPC core's own INFO lines (TLS handshakes, say) are not for the user: our logs say what failed
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    signal.signal(signal.SIGTERM, _terminated)
    cli()
