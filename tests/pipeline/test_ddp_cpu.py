"""Two CPU processes with DDP (gloo) through Lightning Fabric (a few steps of two CPU
processes with DDP). ``magnet train ... --set devices=2 --set strategy=ddp`` is run as a
subprocess; Fabric's launcher starts the second rank by re-running the same command line. The command is a
small script that runs ``magnet train`` and records, per rank, the slides that rank trained on and a
checksum of its final weights, so the test can check that the ranks took disjoint, equal shares of the epoch
and ended with the same (synchronised) model. Two training slides fail every read (a scheme the script
registers): a step where any rank meets one is skipped by every rank, so the ranks stay in step (a single
process would train the rest of the batch; under DDP that happens from the next epoch on).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import PYTHON, balanced_rows, subprocess_env, temp_files, write_recipe

from magnet.data.manifest import ManifestRow, write_manifest
from magnet.training.checkpoints import load_model

RECORDING_TRAIN = """
import json, os, sys
import magnet.training.loop as t
from magnet.errors import SlideError
from magnet.slides.base import Slide
from magnet.slides.registry import register_scheme

class FailingReads(Slide):
    level_dimensions = ((8192, 8192),)
    def read_region(self, location, level, size):
        raise SlideError(self.path, "unreadable tile (test)")

register_scheme("ddpfailing", FailingReads)

record = {"slides": {}}
epoch_batches, fit = t.Trainer._epoch_batches, t.Trainer.fit

def recording_batches(self, epoch):
    rows, maps = epoch_batches(self, epoch)
    record["rank"], record["world"] = self.fabric.global_rank, self.fabric.world_size
    record["slides"][epoch] = [r.slide for batch in rows for r in batch]
    return rows, maps

def recording_fit(self):
    result = fit(self)
    record["weights"] = [float(p.detach().double().sum()) for p in self.model.parameters()]
    with open(os.path.join(os.environ["RECORD_DIR"], f"rank{record['rank']}.json"), "w") as f:
        json.dump(record, f)
    return result

t.Trainer._epoch_batches, t.Trainer.fit = recording_batches, recording_fit
from magnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_cpu_processes_with_ddp_share_the_epoch(tmp_path: Path) -> None:
    base = balanced_rows()
    train = [r for r in base if r.split == "train"]
    # Training rows 3 and 8 fail. Seed 7's epoch-0 permutation gives both to rank 0, in steps 0 and 1
    # (checked below): unless the ranks agree on skips, rank 0 back-propagates once, rank 1 three times.
    train.insert(3, ManifestRow("ddpfailing:0", 0, "negative", "train"))
    train.insert(8, ManifestRow("ddpfailing:1", 1, "macro", "train"))
    rows = [*(r for r in base if r.split != "train"), *train]
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    recipe = write_recipe(tmp_path / "tiny.yaml", manifest, optim={"epochs": 1, "batch_size": 2},
                          data={"max_failed_share": 0.5})
    script = tmp_path / "recording_train.py"
    script.write_text(RECORDING_TRAIN)
    records, out = tmp_path / "records", tmp_path / "run"
    records.mkdir()
    env = {**subprocess_env(), "RECORD_DIR": str(records)}
    # Own process group, so that a hang (the bug this guards against) takes the second rank down too.
    proc = subprocess.Popen(
        [PYTHON, str(script), "train", str(recipe), "--out", str(out), "--no-progress",
         "--set", "devices=2", "--set", "strategy=ddp"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=int(os.environ.get("PIPELINE_DDP_TIMEOUT", "900")))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("DDP training did not finish in time (ranks out of step?)")
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert "distributed_backend=gloo" in stdout + stderr

    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    mine, theirs = ranks[0]["slides"]["0"], ranks[1]["slides"]["0"]
    train_slides = {row.slide for row in rows if row.split == "train"}
    assert len(mine) == len(theirs) == len(train_slides) // 2  # equal shares...
    assert set(mine).isdisjoint(theirs) and set(mine) | set(theirs) == train_slides  # ...of one epoch
    # Gradients were averaged across ranks: both ended with the same weights.
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-6, abs=1e-9)

    # Rank 0 alone wrote the outputs: one metrics row, one loadable checkpoint with the weights of both.
    with (out / "metrics.csv").open(newline="") as handle:
        metrics = list(csv.DictReader(handle))
    assert len(metrics) == 1 and metrics[0]["epoch"] == "1"
    assert float(metrics[0]["train_slides_per_s"]) > 0 and metrics[0]["val_n"] == "4"
    # Steps (batches of 2) where either rank met a failing slide were skipped by both.
    bad = [{i // 2 for i, s in enumerate(share) if s.startswith("ddpfailing")} for share in (mine, theirs)]
    assert bad == [{0, 1}, set()], f"the failing slides no longer fall on one rank only: {bad}"
    assert int(metrics[0]["skipped_batches"]) == 2 and int(metrics[0]["failed_slides"]) == 2
    model, _ = load_model(out / "last.ckpt")
    sums = [float(p.detach().double().sum()) for p in model.parameters()]
    assert sums == pytest.approx(ranks[0]["weights"], rel=1e-6, abs=1e-9)
    assert torch.load(out / "last.ckpt", weights_only=True)["config"]["devices"] == 2
    assert temp_files(out) == []
