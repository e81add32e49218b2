"""Tests for the thumbnail baseline: views, training, failures, determinism (behaviour, not accuracy)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magnet.baselines.thumbnail import (
    ThumbnailConfig,
    ThumbnailNet,
    dihedral_batch,
    read_views,
    run_thumbnail,
    train_thumbnail,
    views_by_slide,
)
from magnet.data.manifest import ManifestRow
from magnet.errors import ConfigError, MagnetError
from magnet.metrics.auroc import TABLE1_COLUMNS
from magnet.synth.dataset import make_dataset

# Small virtual slides: their whole view reads in ~0.1-1 s (the 100,000² default: ~0.4-1 s), layout included.
SMALL = (20_000, 20_000)


def save(path: Path, image: np.ndarray) -> str:
    Image.fromarray(image).save(path)
    return str(path)


@pytest.fixture(scope="module")
def virtual_rows() -> list[ManifestRow]:
    # The first 6 of this set: 4 training slides (2 negative, ITC, macro), a negative validation slide; the
    # last (macro, training) moves to validation so that selection has both classes.
    slides = make_dataset(12, 3, size=SMALL)[:6]
    rows = [ManifestRow(s.uri, s.label, s.lesion_class, s.split) for s in slides]
    rows[-1] = replace(rows[-1], split="validation")
    for split in ("train", "validation"):
        assert {r.label for r in rows if r.split == split} == {0, 1}
    return rows


@pytest.fixture(scope="module")
def virtual_views(virtual_rows: list[ManifestRow]) -> dict[str, np.ndarray]:
    return views_by_slide(read_views([r.slide for r in virtual_rows], 32)[32])


def test_views_shapes_and_grey_filter(tmp_path: Path) -> None:
    glass = save(tmp_path / "glass.png", np.full((40, 60, 3), 235, dtype=np.uint8))
    tissue_image = np.full((40, 60, 3), 235, dtype=np.uint8)
    tissue_image[10:30, 20:40] = (200, 90, 160)
    tissue = save(tmp_path / "tissue.png", tissue_image)
    views = read_views([glass, tissue], [16, 24])
    assert sorted(views) == [16, 24]
    for size, v in views.items():
        assert v.images.shape == (2, 3, size, size) and v.images.dtype == torch.uint8
        assert v.kept == [0, 1] and v.skipped == [] and v.specs == [glass, tissue]
        assert int(v.images[0].max()) == 0  # glass only: the grey filter leaves a black view
        assert int(v.images[1].max()) > 0  # the tissue survives
    off = read_views([glass], 16, grey_filter=False)[16]
    assert int(off.images.max()) > 200  # without the filter the glass stays (the canvas margin is black)


def test_virtual_slide_views(virtual_views: dict[str, np.ndarray], virtual_rows: list[ManifestRow]) -> None:
    assert len(virtual_views) == len(virtual_rows)
    for view in virtual_views.values():
        assert view.shape == (3, 32, 32) and view.dtype == np.uint8
        black = (view == 0).all(axis=0).mean()
        assert 0.0 < black < 1.0  # the canvas and glass are black, the tissue is not


def test_disk_cache_gives_the_same_views(tmp_path: Path, virtual_rows: list[ManifestRow]) -> None:
    specs = [r.slide for r in virtual_rows[:2]]
    first = read_views(specs, 16, cache_dir=tmp_path / "cache")[16]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    again = read_views(specs, 16, cache_dir=tmp_path / "cache")[16]
    assert torch.equal(first.images, again.images)


def test_a_bad_slide_is_reported_not_raised(tmp_path: Path) -> None:
    good = save(tmp_path / "good.png", np.full((32, 32, 3), (180, 60, 120), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    specs = [str(tmp_path / "missing.png"), good, str(tmp_path / "broken.png"), "synth:nonsense=1"]
    views = read_views(specs, 16)[16]
    assert views.kept == [1] and views.specs == [good] and views.images.shape == (1, 3, 16, 16)
    assert [s for s, _ in views.skipped] == [specs[0], specs[2], specs[3]]
    assert all(reason for _, reason in views.skipped)


def test_training_returns_a_table1_result(
    virtual_rows: list[ManifestRow], virtual_views: dict[str, np.ndarray], tmp_path: Path
) -> None:
    bad = ManifestRow(str(tmp_path / "missing.png"), 0, "negative", "test")
    cfg = ThumbnailConfig(size=32, epochs=2, batch_size=2, n_bootstrap=20)
    result = run_thumbnail(virtual_rows, cfg, test=[*virtual_rows, bad], views=virtual_views)
    assert [s for s, _ in result.skipped] == [bad.slide]  # reported, left out, the run goes on
    assert result.test_rows == virtual_rows
    assert result.probabilities.shape == (len(virtual_rows),)
    assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))
    for key, _, _ in TABLE1_COLUMNS:
        entry = result.metrics[key]
        assert set(entry) == {"auroc", "ci95", "n_pos", "n_neg"}
        if entry["auroc"] is not None:
            assert 0.0 <= entry["auroc"] <= 1.0 and entry["ci95"][0] <= entry["ci95"][1]
    assert result.metrics["n_slides"] == len(virtual_rows)
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    assert result.summary()["skipped"] == [[bad.slide, result.skipped[0][1]]]


def test_deterministic_for_a_fixed_seed(
    virtual_rows: list[ManifestRow], virtual_views: dict[str, np.ndarray]
) -> None:
    cfg = ThumbnailConfig(size=32, epochs=1, batch_size=2, n_bootstrap=0, seed=7)
    first = run_thumbnail(virtual_rows, cfg, test=virtual_rows, views=virtual_views)
    second = run_thumbnail(virtual_rows, cfg, test=virtual_rows, views=virtual_views)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert first.history == second.history
    other_cfg = ThumbnailConfig(size=32, epochs=1, batch_size=2, n_bootstrap=0, seed=8)
    other = run_thumbnail(virtual_rows, other_cfg, test=virtual_rows, views=virtual_views)
    assert not np.array_equal(first.probabilities, other.probabilities)


def test_training_needs_both_classes() -> None:
    images = torch.zeros((4, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(MagnetError, match="positive and negative"):
        train_thumbnail(images, [1, 1, 1, 1], None, None, ThumbnailConfig(size=16, epochs=1))


def test_without_validation_the_last_epoch_is_kept() -> None:
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    cfg = ThumbnailConfig(size=16, epochs=2, batch_size=3)
    trained = train_thumbnail(images, [0, 1] * 3, None, None, cfg)
    assert trained.best_epoch == 2 and [h["val_auroc"] for h in trained.history] == [None, None]


def test_dihedral_maps_are_the_eight_distinct_symmetries() -> None:
    image = torch.arange(2 * 3 * 3).reshape(1, 2, 3, 3)
    outs = [dihedral_batch(image, [k])[0] for k in range(8)]
    assert torch.equal(outs[0], image[0])
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    for o in outs:  # a permutation of the pixels, the channels kept together
        assert sorted(o[0].flatten().tolist()) == list(range(9))


@pytest.mark.parametrize("size", [32, 300])
def test_network_shapes(size: int) -> None:
    net = ThumbnailNet(size)
    first = net.backbone.encoder[0]
    has_stem = isinstance(first, torch.nn.Conv2d) and first.stride == (4, 4)
    assert has_stem == (size > 256)
    assert net(torch.rand(2, 3, size, size)).shape == (2,)


def test_config_refuses_unusable_values() -> None:
    with pytest.raises(ConfigError, match="size"):
        ThumbnailConfig(size=8)
    with pytest.raises(ConfigError, match="batch_size"):
        ThumbnailConfig(batch_size=1)
