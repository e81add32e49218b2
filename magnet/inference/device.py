"""The torch device a command runs its model on, refused in one line when this machine does not have it."""

from __future__ import annotations

import torch

from magnet.errors import MagnetError

__all__ = ["resolve_device"]


def resolve_device(text: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``... as a ``torch.device`` that exists here.

    ``MagnetError`` (one line naming the option, the value and the reason) for a name torch does not know,
    a CUDA device on a machine without CUDA or without that many GPUs, and an unavailable MPS device.
    """
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise MagnetError(f"--device {text}: not a torch device (expected cpu, cuda, cuda:N or "
                          "mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise MagnetError(f"--device {text}: CUDA is not available on this machine ({why})")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise MagnetError(f"--device {text}: this machine has {count} CUDA device(s), numbered from 0")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise MagnetError(f"--device {text}: MPS (Apple GPU) is not available on this machine")
        return device
    raise MagnetError(f"--device {text}: device type {device.type!r} is not supported (use cpu, cuda or mps)")
