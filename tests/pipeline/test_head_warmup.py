"""Head warm-up ([choice], docs/method.md §9; magnet.training.warmup): root views, dihedral maps, the
warm-up loop, the Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pipeline_fixtures import dataset, one_thread, tiny_config

from magnet.errors import ConfigError
from magnet.geometry import dihedral_matrix
from magnet.models import MagnifyingLayer, model_config
from magnet.slides.tensor_source import TensorRegionSource
from magnet.training.loop import Trainer
from magnet.training.warmup import dihedral_views, read_root_views, warm_up_heads


def test_dihedral_views_are_the_root_roi_dihedral_reads() -> None:
    coarse = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    source = TensorRegionSource(F.interpolate(coarse, size=(64, 64), mode="bilinear")[0])
    root = read_root_views([source], 16)[0]
    reads = {source.read(dihedral_matrix(k, torch.float64)[None], 16)[0] for k in range(8)}
    views = [dihedral_views(root, j) for j in range(8)]
    assert len({v.flatten()[:40].numpy().round(5).tobytes() for v in views}) == 8  # all distinct
    # As a set, the 8 tensor maps of the identity view are the 8 reads with dihedral root ROIs.
    for read in reads:
        assert any(torch.allclose(read, v, atol=1e-5) for v in views)


def spot_views(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Root views of 'slides': smooth tissue of a random tint; positives carry a small dark-pink spot."""
    g = torch.Generator().manual_seed(seed)
    views = torch.empty(n, 3, 24, 24)
    labels = (torch.arange(n) % 2).float()
    for i in range(n):
        tint = 0.55 + 0.2 * torch.rand(3, 1, 1, generator=g)
        views[i] = tint + 0.03 * torch.randn(3, 24, 24, generator=g)
        if labels[i]:
            y, x = torch.randint(4, 20, (2,), generator=g).tolist()
            views[i, :, y - 2 : y + 2, x - 2 : x + 2] = torch.tensor([0.8, 0.2, 0.5]).view(3, 1, 1)
    return views.clamp(0, 1), labels


def test_warm_up_teaches_the_heads_the_spot() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sizes = dict(view_size=24, read_size=48, final_size=32, final_read_size=64, classifier_input_size=32)
    config = model_config("tiny", **sizes, sibling_layout="strips", head_mil=True, head_mil_sharpness=20.0,
                          head_init_std=0.05, head_highpass=2.0)
    layer = MagnifyingLayer(2, config, 1)
    views, labels = spot_views(64, seed=0)
    reported: list[float] = []
    losses = warm_up_heads(layer, views, labels, steps=120, batch_size=16, lr=3e-3,
                           generator=torch.Generator().manual_seed(0), progress=reported.append)
    assert len(losses) == 120 and reported == losses
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    test_views, test_labels = spot_views(32, seed=1)
    layer.eval()
    with torch.no_grad():
        logits = layer.mil_logit(layer.score_maps(test_views[:, None]))
    assert float(logits[test_labels == 1].min()) > float(logits[test_labels == 0].max())  # separated


def test_warm_up_needs_head_mil_and_the_first_layer() -> None:
    views, labels = spot_views(4, seed=0)
    plain = MagnifyingLayer(2, model_config("tiny"), 1)
    with pytest.raises(ConfigError, match="needs model.head_mil=true"):
        warm_up_heads(plain, views, labels, steps=1, batch_size=2, lr=1e-3, generator=torch.Generator())
    config = model_config("tiny", sibling_layout="strips", head_mil=True)
    second = MagnifyingLayer(config.patches_per_layer[1], config, 2)
    with pytest.raises(ValueError, match="only the first layer"):
        warm_up_heads(second, views, labels, steps=1, batch_size=2, lr=1e-3, generator=torch.Generator())


def test_trainer_warms_up_the_first_heads_before_epoch_one(tmp_path: Path) -> None:
    manifest = dataset(tmp_path / "data")
    levers = ("model.sibling_layout=strips", "model.head_mil=true", "optim.head_warmup_steps=6",
              "optim.head_warmup_batch=4")
    with one_thread():
        warmed = tiny_config(manifest, *levers, folder=tmp_path)
        trainer = Trainer(warmed, tmp_path / "run", show_progress=False)
        untouched = Trainer(tiny_config(manifest, "model.sibling_layout=strips", "model.head_mil=true",
                                        folder=tmp_path), tmp_path / "run0", show_progress=False)
    assert len(trainer.warmup_losses) == 6 and untouched.warmup_losses == []
    # Same seed, same initialisation: only the warmed-up first layer's heads differ.
    warm, cold = trainer.model.state_dict(), untouched.model.state_dict()
    changed = {k for k in warm if not torch.equal(warm[k], cold[k])}
    assert changed and all(k.startswith("layers.0.") for k in changed)
    with one_thread():  # the zoom controls use no heads: nothing to warm up, and the same recipe runs
        fixed = tiny_config(manifest, *levers, "model.zoom=fixed", folder=tmp_path)
        control = Trainer(fixed, tmp_path / "run1", show_progress=False)
        later = tiny_config(manifest, *levers, "model.learned_layers=[2]", folder=tmp_path)
        first_layer_fixed = Trainer(later, tmp_path / "run2", show_progress=False)
    assert control.warmup_losses == []
    assert first_layer_fixed.warmup_losses == []  # layer 1 on the fixed layout: its heads never place a box
    with pytest.raises(ConfigError, match="needs model.head_mil=true"):
        Trainer(tiny_config(manifest, "optim.head_warmup_steps=3", folder=tmp_path), tmp_path / "bad",
                show_progress=False)
