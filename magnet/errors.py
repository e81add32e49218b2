"""User-facing errors.

A ``MagnetError`` is a mistake of the user's (a missing file, a bad config key, a corrupt slide), not a
bug. Its message is one line that names the file or value and the reason; the command-line entry point
prints it without a traceback and exits with status 2. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MagnetError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str) -> None:
        # Keep it one line whatever the underlying library said.
        super().__init__(" ".join(str(message).split()))


class SlideError(MagnetError):
    """A slide cannot be opened or read."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[SlideError], tuple[str, str]]:
        # Rebuilt from (path, reason), not from the message: a worker process's error crosses back whole.
        return type(self), (self.path, self.reason)


class ConfigError(MagnetError):
    """A config file or override is invalid."""


class NonFiniteError(MagnetError):
    """A NaN or an infinity inside the model (weights or activations), found where it would do harm.

    Raised, for instance, by the spatial sparsemax, whose threshold is undefined for non-finite scores. It is
    a ``MagnetError`` so that it ends as one line, but not a ``SlideError``: the slide is not to blame, and
    code that skips unreadable slides must not skip it. Training adds where it happened and what to do.
    """


class ReportedByRankZero(MagnetError):
    """A user mistake that rank 0 of a multi-process run reports, raised on the other ranks to end them too.

    The command line ends such a rank without a word and with status 0: the run's one line and exit status
    are rank 0's (a launcher that sees a rank fail may kill the others, rank 0 among them, before it has
    said why).
    """
