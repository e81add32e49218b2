"""How many processes share a ``magnet predict`` run: the options, or the environment of the launcher that
started them (torchrun, SLURM's srun); one process, without any Fabric, when neither says more."""

from __future__ import annotations

import os

import pytest
import torch

from magnet.errors import MagnetError
from magnet.evaluation.ranks import Ranks, launcher_world, start_ranks

LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_NNODES",
                      "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME")


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_a_launcher_one_process_runs_alone(no_launcher: pytest.MonkeyPatch) -> None:
    assert launcher_world() is None
    ranks = start_ranks(torch.device("cpu"))
    assert (ranks.rank, ranks.world_size, ranks.is_leader) == (0, 1, True)
    assert not torch.distributed.is_initialized()
    assert ranks.from_leader(lambda: 3) == 3 and ranks.agree(lambda: 4) == 4 and ranks.gather(5) == [5]
    with pytest.raises(MagnetError, match="refused"):
        Ranks().from_leader(lambda: (_ for _ in ()).throw(MagnetError("refused")))


def test_torchrun_sets_processes_per_machine_and_machines(no_launcher: pytest.MonkeyPatch) -> None:
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "job")
    no_launcher.setenv("LOCAL_WORLD_SIZE", "4")
    no_launcher.setenv("WORLD_SIZE", "8")
    assert launcher_world() == (4, 2)
    no_launcher.setenv("LOCAL_WORLD_SIZE", "1")
    no_launcher.setenv("WORLD_SIZE", "1")
    assert launcher_world() == (1, 1)
    assert start_ranks(torch.device("cpu")).world_size == 1  # torchrun with one process: no Fabric


def test_srun_sets_them_from_its_tasks_and_nodes(no_launcher: pytest.MonkeyPatch) -> None:
    no_launcher.setenv("SLURM_NTASKS", "8")
    no_launcher.setenv("SLURM_NNODES", "2")
    no_launcher.setenv("SLURM_JOB_NAME", "predict")
    assert launcher_world() == (4, 2)
    no_launcher.setenv("SLURM_NTASKS_PER_NODE", "2")  # srun --ntasks-per-node 2 (of 4 tasks in all)
    assert launcher_world() == (2, 2)
    no_launcher.setenv("SLURM_JOB_NAME", "interactive")  # an interactive allocation: not srun's processes
    assert launcher_world() is None


def test_a_broken_launcher_environment_is_one_line(no_launcher: pytest.MonkeyPatch) -> None:
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "job")
    no_launcher.setenv("LOCAL_WORLD_SIZE", "four")
    with pytest.raises(MagnetError, match="the launcher's environment is incomplete or not numbers"):
        launcher_world()
    assert "TORCHELASTIC_RUN_ID" in os.environ
