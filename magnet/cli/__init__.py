"""The ``magnet`` command: one entry point, a module per subcommand.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets ``func``. The modules
stay thin: parse, build a config, call the library. A ``MagnetError`` (a user mistake) is printed as one line
``magnet: error: <message>`` and exits with status 2, without a traceback. Numeric options are refused
by argparse itself (``type=arg_type(...)`` from ``magnet.domains``, the rules the config keys follow), with
its usual ``magnet <command>: error: argument --option: ...`` line and status 2; ``main`` returns that
status instead of exiting, like every other.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from magnet import __version__
from magnet.errors import MagnetError

# Subcommand modules, in the order `magnet --help` lists them.
SUBCOMMANDS = ("slide_info", "synth", "data", "train", "evaluate", "predict", "explain", "demo")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage error (2: one line naming the option), --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code = args.func(args)
    except MagnetError as exc:
        print(f"magnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("magnet: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
