"""The processes of one ``magnet predict`` run: this one alone, or one of several ranks (Lightning Fabric).

``start_ranks`` decides how many processes predict the cohort together, and where this one computes:

- ``--devices N`` (processes per machine) and ``--num-nodes M`` (machines) as given; Fabric starts the
  other processes of this machine itself by running the same command line again, as ``magnet train`` does
  with ``--set devices=N``;
- under a launcher that started every process already (``torchrun``, SLURM's ``srun``), the options left
  out are read from the launcher's environment, so ``torchrun --nproc-per-node 4 -m magnet predict ...``
  needs no ``--devices``; given ones must agree with it (Lightning's check, one line);
- otherwise one process: no Fabric, no process group, nothing else changes.

Each rank computes on the device of its local rank (``--device cuda``: ``cuda:<local rank>``; ``cpu``: the
CPU). Inference needs no gradient exchange, so the process group is gloo, used only to pass a few Python
objects (the plan, refusals, the rows of each rank); that works the same on GPUs and CPUs. The start-up
steps wait Lightning's usual 30 minutes for a rank that does not come; the last step waits up to
``SHARE_WAIT`` for the slowest rank, because a rank done with its share early waits there for the others.

``Ranks`` keeps the ranks in step, so that a user mistake found on one rank ends every rank instead of
leaving the others waiting, and rank 0 says it in one line (the others end silently): ``from_leader`` runs
a step on rank 0 and hands its result (or its refusal) to all; ``agree`` runs a step on every rank and ends
all of them if any refused; ``gather`` hands every rank the values of all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch

from magnet.errors import MagnetError, ReportedByRankZero

__all__ = ["SHARE_WAIT", "Ranks", "launcher_world", "requested_world", "start_ranks"]

T = TypeVar("T")

# The longest a rank waits at the end of the run for the other ranks to finish their shares.
SHARE_WAIT = timedelta(days=7)


@dataclass
class Ranks:
    """This process's place among the processes of a run: ``rank`` of ``world_size``, computing on
    ``device``. The default is a run of one process."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _share_group: Any = field(default=None, repr=False)  # the gloo group with the long wait (``gather``)

    @property
    def is_leader(self) -> bool:
        """Rank 0: reads and writes what belongs to the whole run (the plan, the merged table, the report)."""
        return self.rank == 0

    def from_leader(self, step: Callable[[], T]) -> T:
        """Run ``step`` on rank 0 only; every rank returns its result, or raises its ``MagnetError``."""
        if self.world_size == 1:
            return step()
        outcome: list[Any] = [None, ""]
        if self.is_leader:
            try:
                outcome[0] = step()
            except MagnetError as exc:
                outcome[1] = str(exc)
        torch.distributed.broadcast_object_list(outcome, src=0)
        if outcome[1]:
            raise self._refusal(outcome[1])
        return outcome[0]  # type: ignore[no-any-return]

    def agree(self, step: Callable[[], T]) -> T:
        """Run ``step`` on every rank; if any rank raised a ``MagnetError``, every rank raises the first."""
        if self.world_size == 1:
            return step()
        result: Any = None
        refusal = ""
        try:
            result = step()
        except MagnetError as exc:
            refusal = str(exc)
        refusals: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(refusals, refusal)
        first = next((r for r in refusals if r), "")
        if first:
            raise self._refusal(first)
        return result  # type: ignore[no-any-return]

    def _refusal(self, message: str) -> MagnetError:
        """The error that ends every rank: rank 0 says it, the others end silently (one line per run)."""
        return MagnetError(message) if self.is_leader else ReportedByRankZero(message)

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, by rank, on every rank; waits up to ``SHARE_WAIT`` for the slowest.

        A rank that died meanwhile (killed, out of memory) ends the others with one line: what each rank
        recorded stays in the folder and the next run takes it up.
        """
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        try:
            torch.distributed.all_gather_object(values, value, group=self._share_group)
        except RuntimeError as exc:  # the connection to a dead rank broke, or the wait ran out
            raise MagnetError(f"rank {self.rank}: another rank ended before the run did "
                              f"({_first_sentence(exc)}); the slides done are kept: run the same command "
                              "again to finish the cohort") from None
        return values


def _first_sentence(exc: BaseException) -> str:
    """What a torch.distributed error says, without its source location and advice: ``Connection closed by
    peer [127.0.0.1]:13510``."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())
    return text.split(". ")[0].splitlines()[0] if text else type(exc).__name__


def start_ranks(device: torch.device, devices: int | None = None, num_nodes: int | None = None) -> Ranks:
    """The ranks of this run (see the module doc); with more than one, Fabric is launched here.

    ``devices`` and ``num_nodes``: the command's ``--devices`` and ``--num-nodes`` (None: not given).
    Impossible settings are a one-line ``MagnetError``.
    """
    world = requested_world(devices, num_nodes)
    if world is None:
        return Ranks(device=device)
    per_node, nodes = world
    if device.index is not None:
        raise MagnetError(f"--device {device}: with several processes each computes on the device of its "
                          f"local rank; give --device {device.type}")
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        fabric = Fabric(accelerator=device.type, devices=per_node, num_nodes=nodes,
                        strategy=DDPStrategy(process_group_backend="gloo"))
        fabric.launch()
        share_group = torch.distributed.new_group(backend="gloo", timeout=SHARE_WAIT)
    except (MisconfigurationException, RuntimeError, TypeError, ValueError) as exc:
        raise MagnetError(f"--devices {per_node} --num-nodes {nodes} --device {device.type}: "
                          f"{_first_sentence(exc)}") from None
    return Ranks(fabric.global_rank, fabric.world_size, fabric.device, share_group)


def requested_world(devices: int | None, num_nodes: int | None) -> tuple[int, int] | None:
    """``(processes per machine, machines)`` of a run of several processes: the options given, the rest
    from the launcher's environment; None for a run of one process."""
    launched = launcher_world() or (1, 1)
    per_node, nodes = devices or launched[0], num_nodes or launched[1]
    return None if per_node * nodes == 1 and launched == (1, 1) else (per_node, nodes)


def launcher_world() -> tuple[int, int] | None:
    """``(processes per machine, machines)`` as the launcher that started this process set them in its
    environment (``torchrun``, SLURM's ``srun``), or None when no launcher did."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    env = os.environ
    try:
        if TorchElasticEnvironment.detect():
            per_node = int(env["LOCAL_WORLD_SIZE"])
            return per_node, max(1, int(env["WORLD_SIZE"]) // per_node)
        if SLURMEnvironment.detect():
            nodes = int(env.get("SLURM_NNODES", "1"))
            per_node_text = env.get("SLURM_NTASKS_PER_NODE", "")
            per_node = int(per_node_text) if per_node_text.isdigit() else int(env["SLURM_NTASKS"]) // nodes
            return max(1, per_node), nodes
    except (KeyError, ValueError, ZeroDivisionError) as exc:
        raise MagnetError(f"the launcher's environment is incomplete or not numbers ({exc}); start the "
                          "processes with torchrun or srun, or give --devices and --num-nodes") from None
    return None
