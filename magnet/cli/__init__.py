"""The ``magnet`` command: one entry point, a module per subcommand.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets ``func``. The modules
stay thin: parse, build a config, call the library. A ``MagnetError`` (a user mistake) is printed as one line
``magnet: error: <message>`` and exits with status 2, without a traceback; when several processes run one
command, rank 0 alone does, and the others end silently with status 0 (``ReportedByRankZero``). Numeric
options are refused by argparse itself (``type=arg_type(...)`` from ``magnet.domains``, the rules the
config keys follow), with its usual ``magnet <command>: error: argument --option: ...`` line and status 2;
``main`` returns that status instead of exiting, like every other.

Ctrl-C ends a command with status 130 and SIGTERM (a job scheduler, ``timeout``, ``kill``) with 143, both
as a ``KeyboardInterrupt`` inside the command, so that every temporary file of an atomic write is removed
and a training run says which checkpoint is intact. What the slide libraries print is collected
(``magnet.slides.noise``): a failing command prints its one-line error alone, a succeeding one at most one
line saying how many library messages were hidden.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from magnet import __version__
from magnet.errors import MagnetError, ReportedByRankZero

# Subcommand modules, in the order `magnet --help` lists them.
SUBCOMMANDS = ("slide_info", "synth", "data", "pretrain", "train", "refit", "evaluate", "predict", "explain",
               "baseline", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magnet",
        description="Magnifying Networks: classify whole-slide images by learning where to zoom.",
    )
    parser.add_argument("--version", action="version", version=f"magnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"magnet.cli.{name}").register(subparsers)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that cleanup runs as for Ctrl-C."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into ``_Terminated`` while inside (main thread only: signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    from magnet.slides.noise import hush_libraries, noise_summary

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage error (2: one line naming the option), --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    hush_libraries()
    noise_summary()  # start counting now (several commands may run in one process: tests)
    try:
        with _sigterm_interrupts():
            code = args.func(args)
    except ReportedByRankZero:
        return 0
    except MagnetError as exc:
        noise_summary()  # the error is the line that matters
        print(f"magnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print(f"magnet: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    summary = noise_summary()
    if summary:
        print(f"magnet: note: {summary}", file=sys.stderr)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
