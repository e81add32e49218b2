"""Training stops at the first non-finite loss or weight, and no checkpoint holds a non-finite number.

A NaN or infinite loss (a learning rate far too large, an exploding gradient) turns every weight into NaN
at the next optimiser step; training on would only burn hours and then save a model that predicts NaN.
So after every optimiser step the trainer calls ``check_step`` once: the losses of the batches that went
into that step must be finite, and so must every parameter afterwards. The check sits after the step, not
before the backward pass, because under DDP every rank must stop at the same point: gradients are averaged
across ranks, so a NaN on one rank makes the weights NaN on all of them at the same step, and each rank
stops there instead of waiting for the others in the next all-reduce.

A non-finite activation inside the forward pass (scores overflowing to inf, then inf - inf) is caught where
it would first do harm, by the spatial sparsemax or the region reader (``NonFiniteError``);
``non_finite_forward`` words it like the checks here, naming the epoch and step.

``save_checkpoint`` refuses non-finite tensors as a last line (batch-norm running statistics are not
parameters, and a checkpoint can be written by other code than the loop).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from magnet.errors import MagnetError, NonFiniteError

__all__ = ["check_step", "non_finite_forward", "non_finite_names"]

_ADVICE = "stopped without saving it; lower optim.lr, set optim.grad_clip or check the data"


def _where(epoch: int, step: int) -> str:
    return f"epoch {epoch + 1}, step {step + 1}"


def non_finite_names(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity, in order."""
    return [n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_step(losses: Iterable[float], model: torch.nn.Module, *, epoch: int, step: int) -> None:
    """Raise a one-line ``MagnetError`` if a loss of this optimiser step, or a weight after it, is not finite.

    ``epoch`` and ``step`` are 0-based (the message counts from 1, as the progress bar does).
    """
    where, advice = _where(epoch, step), _ADVICE
    bad_losses = [x for x in losses if not math.isfinite(x)]
    if bad_losses:
        raise MagnetError(f"{where}: the training loss is {bad_losses[0]}; {advice}")
    params = [p.detach() for p in model.parameters() if p.is_floating_point()]
    if params and bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        return  # one device sync per step; the names are looked up only on failure
    bad = non_finite_names(dict(model.named_parameters()))
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise MagnetError(f"{where}: non-finite weights after the optimiser step ({bad[0]}{more}); {advice}")


def non_finite_forward(exc: NonFiniteError, *, epoch: int, step: int) -> MagnetError:
    """The one-line error for a NaN or inf met inside the forward pass of a training step (0-based)."""
    return MagnetError(f"{_where(epoch, step)}: {exc}; {_ADVICE}")
