"""Readout refit (``refit.epochs``, magnet.training.readout_refit): the readout fitted again on cached
final-patch features, nothing else changed, the best validation epoch kept, bad slides left out."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import dataset, one_line_error, one_thread, temp_files, tiny_config

from magnet.cli import main
from magnet.data.manifest import ManifestRow, read_manifest
from magnet.errors import ConfigError, MagnetError
from magnet.metrics.auroc import auroc
from magnet.models.classifier import Classifier
from magnet.slides.pool import SlidePool
from magnet.training import readout_refit
from magnet.training.checkpoints import load_checkpoint, load_model
from magnet.training.loop import train
from magnet.training.readout_refit import (
    CachedFeatures,
    RefitResult,
    final_patch_features,
    refit_readout,
    refit_readout_folds,
    stratified_folds,
)
from magnet.training.recipe import RefitConfig


def separable(count: int, seed: int) -> CachedFeatures:
    """Bags of 6 patch features (D = 64): a positive bag's last patch is shifted along a fixed direction
    (the last, so that a GRU need not remember it)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(count, 6, 64, generator=g)
    labels = (torch.arange(count) % 2).float()
    direction = torch.zeros(64)
    direction[:8] = 3.0
    features[labels == 1, -1] += direction
    return CachedFeatures(features, labels, [f"s{i}" for i in range(count)], {})


@pytest.mark.parametrize("readout", ["lse", "attention", "gru"])
def test_refit_learns_the_readout_and_leaves_the_cnn(readout: str) -> None:
    torch.manual_seed(0)
    classifier = Classifier("small", gru_hidden=16, input_size=32, readout=readout)
    cnn = {k: v.clone() for k, v in classifier.backbone.state_dict().items()}
    with one_thread():
        result = refit_readout(classifier, separable(64, 1), separable(32, 2), epochs=6, lr=1e-3,
                               weight_decay=0.0, seed=3)
    assert result.val_auroc_after >= result.val_auroc_before
    assert result.val_auroc_after > 0.95 and 1 <= result.best_epoch <= 6
    assert (result.n_train, result.n_validation) == (64, 32)
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(value, cnn[key]), key
    # The classifier keeps the best epoch's readout: its validation AUROC is the one reported.
    test = separable(32, 2)
    with torch.no_grad():
        logits = classifier.read_out(test.features).logit
    assert auroc(test.labels.tolist(), logits.tolist()) == pytest.approx(result.val_auroc_after)


def test_refit_learns_a_readout_over_cells() -> None:
    """Cell maps ``(S, N, D, h, w)``: a positive bag's lesion fills one cell of one patch, which the patch's
    mean dilutes 16-fold; the refit of a readout over cells finds it."""
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(96, 3, 64, 4, 4, generator=g)
    labels = (torch.arange(96) % 2).float()
    maps[labels == 1, 2, :8, 1, 2] += 3.0
    train, val = (CachedFeatures(maps[half], labels[half], [f"s{j}" for j in range(48)], {})
                  for half in (slice(0, 48), slice(48, 96)))
    torch.manual_seed(0)
    classifier = Classifier("small", input_size=32, readout="lse", instances="cells")
    with one_thread():
        result = refit_readout(classifier, train, val, epochs=6, lr=1e-3, weight_decay=0.0, seed=3)
    assert result.val_auroc_after > 0.95


def test_refit_of_no_epochs_keeps_the_given_readout() -> None:
    torch.manual_seed(0)
    classifier = Classifier("small", input_size=32, readout="lse")
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    result = refit_readout(classifier, separable(16, 1), separable(8, 2), epochs=0, lr=1e-3,
                           weight_decay=0.0, seed=0)
    assert result.best_epoch == 0 and result.val_auroc_after == result.val_auroc_before
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(("trained_competes", "kept"), [(False, 1), (True, 0)])
def test_the_trained_readout_is_kept_only_when_it_competes(trained_competes: bool, kept: int) -> None:
    # With lr 0 every pass scores exactly as the trained readout: a tie, which the trained readout wins
    # only when it is a candidate; otherwise the first refit pass is kept.
    torch.manual_seed(0)
    classifier = Classifier("small", input_size=32, readout="lse")
    result = refit_readout(classifier, separable(16, 1), separable(8, 2), epochs=3, lr=0.0,
                           weight_decay=0.0, seed=0, trained_competes=trained_competes)
    assert result.best_epoch == kept
    assert result.val_auroc_after == pytest.approx(result.val_auroc_before)


def test_the_summary_says_why_a_refit_scores_below_the_trained_readout() -> None:
    def line(before: float, after: float) -> str:
        return RefitResult(epochs=20, best_epoch=7, val_auroc_before=before, val_auroc_after=after,
                           n_train=10, n_validation=5, seconds=1.0).summary("run/best.ckpt")

    assert "0.820 -> 0.790 (epoch 7 of 20" in line(0.82, 0.79) and "trained_competes" in line(0.82, 0.79)
    assert "trained_competes" not in line(0.70, 0.79)


def test_after_pass_sees_every_epoch_and_does_not_change_the_fit() -> None:
    seen: list[tuple[int, float]] = []

    def watch(epoch: int, readout: Classifier) -> None:
        with torch.no_grad():
            seen.append((epoch, float(readout.read_out(separable(8, 5).features).logit.sum())))

    results = []
    for after_pass in (None, watch):
        torch.manual_seed(0)
        classifier = Classifier("small", input_size=32, readout="lse")
        results.append(refit_readout(classifier, separable(16, 1), separable(8, 2), epochs=3, lr=1e-3,
                                     weight_decay=0.0, seed=0, after_pass=after_pass))
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]
    assert len({value for _, value in seen}) == 4  # the readout it saw moved at every epoch
    assert results[0].best_epoch == results[1].best_epoch
    assert results[0].val_auroc_after == results[1].val_auroc_after


def test_refit_needs_both_labels() -> None:
    classifier = Classifier("small", input_size=32, readout="lse")
    one_label = separable(8, 1)
    one_label.labels[:] = 1
    with pytest.raises(MagnetError, match="validation slides need both labels"):
        refit_readout(classifier, separable(8, 2), one_label, epochs=1, lr=1e-3, weight_decay=0.0, seed=0)


def test_features_are_the_classifier_input_and_a_bad_slide_is_left_out(tmp_path: Path) -> None:
    manifest = dataset(tmp_path / "data")
    model, _ = load_model(train_tiny(manifest, tmp_path / "run", "refit.epochs=0") / "best.ckpt")
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == "validation"]
    bad = ManifestRow(slide=str(tmp_path / "missing.tif"), label=1, split="validation")
    pool = SlidePool(grey_filter=True, threads=1)
    with one_thread():
        cached = final_patch_features(model, [rows[0], bad, *rows[1:]], pool, batch_size=2)
        readers = [pool.get(r.slide) for r in rows]
        with torch.no_grad():
            out = model(readers, auxiliary=False)
            expected = model.classifier.read_out(cached.features).logit
    assert cached.slides == [r.slide for r in rows] and list(cached.skipped) == [bad.slide]
    assert "missing.tif" in cached.skipped[bad.slide]
    assert cached.labels.tolist() == [float(r.label) for r in rows]
    torch.testing.assert_close(expected, out.logit, rtol=1e-4, atol=1e-5)


def train_tiny(manifest: Path, out: Path, *overrides: str) -> Path:
    cfg = tiny_config(manifest, "model.readout=lse", "model.aux_layers=[]", "optim.epochs=2", *overrides)
    with one_thread():
        train(cfg, out, show_progress=False)
    return out


def test_training_ends_with_the_refit_written_into_best_ckpt(tmp_path: Path) -> None:
    manifest = dataset(tmp_path / "data")
    plain = train_tiny(manifest, tmp_path / "plain", "refit.epochs=0")
    run = train_tiny(manifest, tmp_path / "refit", "refit.epochs=3")  # the same training, then the refit
    payload = load_checkpoint(run / "best.ckpt")
    result = payload["readout_refit"]
    assert result["epochs"] == 3 and 0 <= result["best_epoch"] <= 3
    assert result["val_auroc_after"] >= result["val_auroc_before"]
    rows = read_manifest(manifest, check_slides=False).rows
    assert result["n_train"] == sum(r.split == "train" for r in rows)
    assert result["n_validation"] == sum(r.split == "validation" for r in rows)
    events = [json.loads(line)["event"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert events[-1] == "readout refit"
    assert "readout_refit" not in load_checkpoint(plain / "best.ckpt")
    assert "readout_refit" not in load_checkpoint(run / "last.ckpt")
    trained = load_checkpoint(run / "best-trained.ckpt")  # best.ckpt as training left it, kept
    assert "readout_refit" not in trained and not (plain / "best-trained.ckpt").exists()
    assert temp_files(run) == []
    # Only the readout may differ from the same run without the refit.
    base = load_checkpoint(plain / "best.ckpt")["model"]
    assert all(torch.equal(value, base[key]) for key, value in trained["model"].items())
    changed = [key for key, value in payload["model"].items() if not torch.equal(value, base[key])]
    assert all(key.startswith("classifier.head.") for key in changed), changed
    assert bool(changed) == (result["best_epoch"] > 0)


def test_magnet_refit_refits_a_finished_run_from_its_trained_checkpoint(tmp_path: Path, capsys,  # type: ignore[no-untyped-def]
                                                                        monkeypatch) -> None:
    manifest = dataset(tmp_path / "data")
    run = train_tiny(manifest, tmp_path / "run", "refit.epochs=0")
    trained = load_checkpoint(run / "best.ckpt")
    with one_thread():
        assert main(["refit", str(run), "--set", "refit.epochs=2"]) == 0
    assert "readout refit: validation AUROC" in capsys.readouterr().out
    first = load_checkpoint(run / "best.ckpt")
    assert first["readout_refit"]["epochs"] == 2 and first["config"]["refit"]["epochs"] == 2
    kept = load_checkpoint(run / "best-trained.ckpt")
    assert all(torch.equal(value, trained["model"][key]) for key, value in kept["model"].items())
    # A second refit starts again from the trained checkpoint, not from the first refit. Which file it read
    # is asked of the refit itself: comparing the two refits' validation AUROCs before fitting, as this test
    # once did, failed in one full-suite run (its message was not kept); the likely cause is 4 validation
    # slides whose near-tied scores can swap places with the last bits of the features.
    loaded: list[str] = []

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        loaded.append(Path(path).name)
        return load_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr(readout_refit, "load_checkpoint", spy)
    with one_thread():
        assert main(["refit", str(run), "--set", "refit.epochs=1"]) == 0
    assert loaded == ["best-trained.ckpt"]
    second = load_checkpoint(run / "best.ckpt")
    assert second["readout_refit"]["epochs"] == 1 and second["config"]["refit"]["epochs"] == 1
    kept = load_checkpoint(run / "best-trained.ckpt")
    assert all(torch.equal(value, trained["model"][key]) for key, value in kept["model"].items())
    assert temp_files(run) == []


def test_a_refit_over_cells_reads_the_cells_from_then_on(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``refit.readout_instances=cells``: the trained checkpoint keeps patches, the refitted one reads cells,
    and ``magnet evaluate`` of it gives what its classifier gives on the final patches' cells."""
    manifest = dataset(tmp_path / "data")
    run = train_tiny(manifest, tmp_path / "run", "refit.epochs=0")
    with one_thread():
        assert main(["refit", str(run), "--set", "refit.epochs=2",
                     "--set", "refit.readout_instances=cells"]) == 0
    capsys.readouterr()
    refitted = load_checkpoint(run / "best.ckpt")
    assert refitted["config"]["model"]["readout_instances"] == "cells"
    assert load_checkpoint(run / "best-trained.ckpt")["config"]["model"]["readout_instances"] == "patches"
    model, _ = load_model(run / "best.ckpt")
    assert model.classifier.reads_cells
    rows = [r for r in read_manifest(manifest, check_slides=False).rows if r.split == "validation"]
    pool = SlidePool(grey_filter=True, threads=1)
    with one_thread(), torch.no_grad():
        model.eval()
        out = model([pool.get(r.slide) for r in rows], auxiliary=False, cell_logits=True)
    assert out.patch_cell_logits is not None
    cells = out.patch_cell_logits.flatten(1)
    torch.testing.assert_close(out.logit, torch.logsumexp(cells, 1) - math.log(cells.shape[1]))
    with pytest.raises(ConfigError, match="refit.readout_instances=cells.*got gru"):
        tiny_config(manifest, "model.readout=gru", "refit.readout_instances=cells")


def test_magnet_refit_refuses_other_keys_and_a_folder_without_a_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["refit", str(tmp_path), "--set", "optim.lr=1"]) == 2
    assert "only refit.* keys" in one_line_error(capsys)
    assert main(["refit", str(tmp_path / "nothing")]) == 2
    assert "best.ckpt: no such checkpoint file" in one_line_error(capsys)


def test_stratified_folds_deal_each_label_over_every_fold() -> None:
    labels = torch.tensor([0.0] * 13 + [1.0] * 8)
    folds = stratified_folds(labels, 4, seed=5)
    assert sorted(i for fold in folds for i in fold) == list(range(21))  # each slide in exactly one fold
    for fold in folds:
        counts = [int((labels[fold] == label).sum()) for label in (0.0, 1.0)]
        assert counts[0] in (3, 4) and counts[1] == 2
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert stratified_folds(labels, 4, seed=5) == folds and stratified_folds(labels, 4, seed=6) != folds
    with pytest.raises(MagnetError, match="refit.folds=9 needs at least 9 slides of label 1; there are 8"):
        stratified_folds(labels, 9, seed=0)


def test_fold_refit_is_the_mean_of_its_fold_refits() -> None:
    data = separable(48, 1)
    torch.manual_seed(0)
    classifier = Classifier("small", input_size=32, readout="lse")
    given = copy.deepcopy(classifier)
    with one_thread():
        result = refit_readout_folds(classifier, data, folds=3, epochs=3, lr=1e-3, weight_decay=0.0, seed=4)
        # The reference: each fold refitted by hand from the given readout, then their parameters averaged.
        fits = []
        for k, held in enumerate(stratified_folds(data.labels, 3, seed=4)):
            fold = copy.deepcopy(given)
            rest = [i for i in range(48) if i not in held]
            fitted = refit_readout(fold, data.subset(rest), data.subset(held), epochs=3, lr=1e-3,
                                   weight_decay=0.0, seed=4 + k)
            fits.append((fitted, dict(fold.named_parameters())))
    for name, param in classifier.named_parameters():
        if name.startswith("backbone."):
            assert torch.equal(param, dict(given.named_parameters())[name]), name  # the CNN untouched
        else:
            torch.testing.assert_close(param, torch.stack([p[name] for _, p in fits]).mean(0))
    assert result.fold_epochs == [r.best_epoch for r, _ in fits] and all(e >= 1 for e in result.fold_epochs)
    assert result.best_epoch == -1 and result.n_train == 48
    assert result.val_auroc_after == pytest.approx(sum(r.val_auroc_after for r, _ in fits) / 3)
    assert "mean of 3 fold refits" in result.summary("run/best.ckpt")


def test_fold_refit_settings_are_checked_in_one_line() -> None:
    with pytest.raises(ConfigError, match="refit.folds=2 with refit.trained_competes"):
        RefitConfig(folds=2, trained_competes=True)
    with pytest.raises(ConfigError, match="folds"):
        RefitConfig(folds=0)


def test_magnet_refit_with_folds_writes_their_mean(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    manifest = dataset(tmp_path / "data")
    run = train_tiny(manifest, tmp_path / "run", "refit.epochs=0")
    with one_thread():
        assert main(["refit", str(run), "--set", "refit.epochs=2", "--set", "refit.folds=2"]) == 0
    assert "readout refit: mean of 2 fold refits" in capsys.readouterr().out
    payload = load_checkpoint(run / "best.ckpt")
    result = payload["readout_refit"]
    assert len(result["fold_epochs"]) == 2 and payload["config"]["refit"]["folds"] == 2
    rows = read_manifest(manifest, check_slides=False).rows
    assert result["n_train"] == sum(r.split in ("train", "validation") for r in rows)
    model, _ = load_model(run / "best.ckpt")  # the averaged readout loads as any refit does
    assert not model.training and temp_files(run) == []
