"""A training run's outputs: resolved config, checkpoints, metrics.csv, TensorBoard;
checkpoints readable with ``weights_only=True`` and rebuilt into the same model; same seed, same metrics."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import metric_rows, one_thread, temp_files, tiny_config

from magnet.config_io import load_config
from magnet.slides.pool import SlidePool
from magnet.training.checkpoints import load_model
from magnet.training.diagnostics import diagnostic_fields
from magnet.training.loop import train
from magnet.training.recipe import TrainConfig
from magnet.training.run_log import METRIC_FIELDS


def test_run_folder_holds_config_checkpoints_metrics_and_tensorboard(run) -> None:  # type: ignore[no-untyped-def]
    cfg, result = run
    folder: Path = result.run_dir
    assert result.epochs_done == cfg.optim.epochs == 3 and not result.interrupted
    for name in ("config.yaml", "last.ckpt", "best.ckpt", "metrics.csv"):
        assert (folder / name).is_file(), name
    assert load_config(TrainConfig, folder / "config.yaml") == cfg

    with (folder / "metrics.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == METRIC_FIELDS + diagnostic_fields(3)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row in rows:
        assert math.isfinite(float(row["train_loss"])) and float(row["train_slides_per_s"]) > 0
        assert int(row["val_n"]) == 4 and 0.0 <= float(row["val_auroc"]) <= 1.0
        assert int(row["skipped_batches"]) == 0
        for layer in (1, 2, 3):  # zoom diagnostics: s within its bounds, heads get gradients
            assert cfg.model.min_scale <= float(row[f"mean_s_layer{layer}"]) <= 1.0
            assert 0 < float(row[f"support_layer{layer}"]) <= cfg.model.view_size**2
            assert float(row[f"head_grad_layer{layer}"]) > 0
            assert 0 < float(row[f"tissue_share_layer{layer}"]) <= 1  # patches on tissue, not all black
            assert math.isnan(float(row[f"lesion_share_layer{layer}"]))  # the manifest names no outlines
    # Cosine annealing per epoch from optim.lr.
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [cfg.optim.lr * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])

    events = list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert temp_files(folder) == []


def test_checkpoints_are_plain_and_rebuild_the_trained_model(run) -> None:  # type: ignore[no-untyped-def]
    cfg, result = run
    folder: Path = result.run_dir
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 3 and len(last["history"]) == 3
    scores = [h["val_auroc"] for h in last["history"]]
    assert best["best_score"] == pytest.approx(max(scores)) == last["best_score"]
    assert best["epoch"] == 1 + scores.index(max(scores))  # best.ckpt is the epoch of the best AUROC

    model, loaded_cfg = load_model(folder / "last.ckpt")
    assert loaded_cfg == cfg and not model.training
    # The same weights through a model built from scratch: identical outputs on a real (virtual) slide.
    twin, _ = load_model(folder / "last.ckpt")
    twin.load_state_dict(last["model"])
    slide = cfg.data.manifest and _first_slide(Path(cfg.data.manifest))
    pool = SlidePool(threads=1)
    try:
        with torch.no_grad(), one_thread():
            a = model([pool.get(slide)])
            b = twin([pool.get(slide)])
    finally:
        pool.close()
    assert torch.equal(a.logit, b.logit)
    for boxes_a, boxes_b in zip(a.boxes_level0, b.boxes_level0, strict=True):
        assert torch.equal(boxes_a, boxes_b)
    # ... and differing from an untrained model (the checkpoint carries the training).
    fresh = type(model)(cfg.model).eval()
    with torch.no_grad():
        assert not all(torch.equal(p, q) for p, q in zip(fresh.parameters(), model.parameters(), strict=True))


def _first_slide(manifest: Path) -> str:
    with manifest.open(newline="") as handle:
        return next(csv.DictReader(handle))["slide"]


def test_same_seed_gives_identical_metrics(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, first = run
    with one_thread():
        second = train(cfg, tmp_path / "again", show_progress=False)
    assert metric_rows(second.history) == metric_rows(first.history)
    a = torch.load(first.run_dir / "last.ckpt", weights_only=True)["model"]
    b = torch.load(tmp_path / "again" / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# The Camelyon recipes' levers of the learned zoom (configs/magnet3_camelyon.yaml): each draws or reuses
# randomness of its own (warm-up batches and dihedral maps, exploration boxes, tissue strips, the refit).
LEARNED_ZOOM_LEVERS = (
    "model.head_mil=true", "model.sibling_layout=tissue_strips", "model.frozen_patch=false",
    "model.head_highpass=3.0", "model.readout=lse", "model.explore=0.25", "loss.head_value=1.0",
    "optim.head_warmup_steps=4", "optim.head_warmup_batch=4", "optim.epochs=1", "refit.epochs=2",
    "data.augment=true",
)


def test_same_seed_gives_identical_weights_with_the_learned_zoom_levers_on(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, _ = run
    manifest = Path(cfg.data.manifest)
    runs = []
    for name in ("first", "second"):
        recipe = tiny_config(manifest, *LEARNED_ZOOM_LEVERS, folder=tmp_path / name)
        with one_thread():
            result = train(recipe, tmp_path / name / "run", show_progress=False)
        assert result.epochs_done == 1
        runs.append((result, torch.load(result.run_dir / "best.ckpt", weights_only=True)))
    (first, best_a), (second, best_b) = runs
    assert metric_rows(first.history) == metric_rows(second.history)
    refit_a, refit_b = ({k: v for k, v in best["readout_refit"].items() if k != "seconds"}
                        for best in (best_a, best_b))
    assert refit_a == refit_b and refit_a["epochs"] == 2  # the refit ran, and ran alike
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])


def test_another_seed_gives_other_metrics(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Guards the test above against a pipeline that ignores randomness altogether.
    cfg, first = run
    other = tiny_config(Path(cfg.data.manifest), "seed=8", "optim.epochs=1", folder=tmp_path)
    with one_thread():
        result = train(other, tmp_path / "other", show_progress=False)
    assert result.history[0]["train_loss"] != first.history[0]["train_loss"]


@pytest.mark.parametrize(("text", "value"), [("2", 2), ("auto", "auto"), ("'0,1'", "0,1")])
def test_devices_takes_a_count_or_a_lightning_string(text: str, value: object) -> None:
    # `--set devices=2` is how the README asks for two GPUs (or two CPU processes); YAML reads it as an int.
    assert load_config(TrainConfig, None, [f"devices={text}"]).devices == value


def test_the_cells_target_reaches_the_training_loop(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The loop asks the forward for cell logits only when the loss reads them (loss.head_value_target=cells).
    cfg, _ = run
    levers = [lever for lever in LEARNED_ZOOM_LEVERS if not lever.startswith("refit.")]
    recipe = tiny_config(Path(cfg.data.manifest), *levers, "loss.head_value_target=cells", folder=tmp_path)
    with one_thread():
        result = train(recipe, tmp_path / "cells", show_progress=False)
    value = result.history[0]["train_head_value"]
    assert result.epochs_done == 1 and math.isfinite(value) and value > 0
