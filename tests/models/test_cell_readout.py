"""A readout over cells (``model.readout_instances=cells``): the per-patch head scores each cell of the CNN's
last map, a patch's logit pools its cells with the readout's own pool, and the gradient reaches the
patches and the head."""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import SMALL_SIZES, small_config, textured_source

from magnet.errors import ConfigError
from magnet.models import build_model
from magnet.models.classifier import Classifier


def log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(values, dim=-1) - math.log(values.shape[-1])


@pytest.mark.parametrize("readout", ["lse", "max"])
def test_the_slide_logit_pools_every_cell_of_every_patch(readout: str) -> None:
    """Pooling cells within a patch, then patches, with one pool is that pool over all cells at once; the
    cells are those ``cell_logits`` scores (the head on each cell of the CNN's map)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    classifier = Classifier("small", readout=readout, input_size=64, instances="cells").eval()
    patches = torch.rand(2, 3, 3, 64, 64)
    with torch.no_grad():
        features = classifier.features(patches)
        out = classifier.read_out(features)
        cells = classifier.cell_logits(patches).flatten(2)  # (B, N, h * w)
    assert features.shape == (2, 3, classifier.backbone.feature_dim, 4, 4)
    pool = log_mean_exp if readout == "lse" else (lambda v: v.amax(dim=-1))
    torch.testing.assert_close(out.patch_logits, pool(cells), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logit, pool(cells.flatten(1)), rtol=1e-5, atol=1e-5)
    # Patch instances pool the map first: a different number for the same weights.
    patchwise = Classifier("small", readout=readout, input_size=64).eval()
    patchwise.load_state_dict(classifier.state_dict())
    with torch.no_grad():
        assert not torch.allclose(patchwise(patches).logit, out.logit, atol=1e-3)


def test_one_hot_cell_decides_where_the_patch_mean_dilutes_it() -> None:
    torch.manual_seed(0)
    classifier = Classifier("small", readout="lse", input_size=64, instances="cells").eval()
    maps = torch.zeros(1, 2, classifier.backbone.feature_dim, 4, 4)
    with torch.no_grad():
        plain = classifier.read_out(maps).logit
        maps[0, 1, :, 2, 3] = 50.0  # one cell of one patch stands out
        spot = classifier.read_out(maps).logit
        diluted = classifier.read_out(maps.mean(dim=(-2, -1), keepdim=True)).logit  # the same, pooled first
    assert abs(float(spot - plain)) > abs(float(diluted - plain))


@pytest.mark.parametrize("frozen", [True, False])
def test_the_gradient_reaches_the_patches_and_the_head(frozen: bool) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    classifier = Classifier("efficientnet_lite0", readout="attention", input_size=64, frozen=frozen,
                            instances="cells", load_weights=False).train()
    patches = torch.rand(2, 3, 3, 64, 64, requires_grad=True)
    features, cells = classifier.features_and_cell_logits(patches)
    assert features.shape == (2, 3, 1280, 2, 2) and cells.shape == (2, 3, 2, 2) and not cells.requires_grad
    classifier.read_out(features).logit.sum().backward()
    assert patches.grad is not None and float(patches.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in classifier.readout_parameters())
    backbone_grads = [p.grad for p in classifier.backbone.parameters()]
    assert all(g is None for g in backbone_grads) if frozen else any(g is not None for g in backbone_grads)


def test_cells_need_a_per_patch_head() -> None:
    with pytest.raises(ConfigError, match="readout_instances=cells.*got gru"):
        small_config(readout_instances="cells", readout="gru")
    with pytest.raises(ConfigError, match="per-patch head"):
        Classifier("small", readout="gru", input_size=32, instances="cells")
    with pytest.raises(ConfigError, match="instances='tiles'"):
        Classifier("small", readout="lse", input_size=32, instances="tiles")


def test_a_magnet_reads_out_its_final_patches_cells() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fast = dict(SMALL_SIZES, backbone="small", aux_backbone="small", head_branch_channels=2, head_blocks=1,
                readout="lse", zoom="fixed")
    model = build_model("tiny", readout_instances="cells", **fast).eval()
    sources = [textured_source(seed=0), textured_source(96, 128, seed=1)]
    with torch.no_grad():
        out = model(sources, cell_logits=True)
    count = model.config.patches_at(model.config.num_layers)
    # Pooled, as the novelty target reads them.
    assert out.patch_features.shape == (2, count, model.classifier.backbone.feature_dim)
    assert out.patch_cell_logits is not None
    torch.testing.assert_close(out.patch_logits, log_mean_exp(out.patch_cell_logits.flatten(2)))
    torch.testing.assert_close(out.logit, log_mean_exp(out.patch_cell_logits.flatten(1)))
