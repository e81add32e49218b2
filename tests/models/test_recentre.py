"""What the readout reads (``magnet.models.recentre``, docs/method.md §9): with ``model.final_read=direct``
each final box read again from the slide; with ``model.recentre`` each final box moves onto the cell where
the readout's head scores highest and is read again."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import SMALL_SIZES, small_config, textured_source

from magnet.errors import ConfigError
from magnet.geometry import compose, read_views
from magnet.models import build_model
from magnet.models.backbones import CellMap, build_backbone
from magnet.models.classifier import Classifier
from magnet.models.model_config import MagNetConfig
from magnet.models.recentre import centring_theta, final_detail_px
from magnet.slides.tensor_source import TensorRegionSource

FAST = dict(SMALL_SIZES, backbone="small", aux_backbone="small", head_branch_channels=2, head_blocks=1,
            readout="lse", zoom="fixed")


def test_centring_theta_puts_the_best_cell_at_the_centre() -> None:
    logits = torch.zeros(1, 3, 7, 7)
    logits[0, 0, 3, 3] = 1.0  # the centre cell: no move
    logits[0, 1, 0, 6] = 1.0  # top right
    logits[0, 2, 5, 1] = 2.0  # row 5, column 1
    logits[0, 2, 0, 0] = 1.5  # lower than the best: ignored
    theta = centring_theta(logits)
    assert theta.dtype == torch.float64 and theta.shape == (1, 3, 3)
    expected = torch.tensor([[1.0, 0.0, 0.0], [1.0, 6 / 7, -6 / 7], [1.0, -4 / 7, 4 / 7]],
                            dtype=torch.float64)
    assert torch.allclose(theta[0], expected)


def test_the_moved_read_is_centred_on_the_chosen_cell() -> None:
    """Read a box, move it onto one cell, read again: the new read's centre shows what that cell showed."""
    source = textured_source(256, 256, seed=3)
    roi = compose(torch.eye(3, dtype=torch.float64), torch.tensor([0.5, 0.1, -0.2], dtype=torch.float64))
    logits = torch.zeros(1, 1, 4, 4)
    logits[0, 0, 1, 3] = 1.0  # row 1 (y), column 3 (x): pixels [16, 32) x [48, 64) of a 64 px read
    before = read_views([source], roi.view(1, 1, 3, 3), 64, torch.device("cpu"))[0, 0]
    moved = compose(roi.view(1, 1, 3, 3), centring_theta(logits))
    after = read_views([source], moved, 64, torch.device("cpu"))[0, 0]
    # The cell's 16 x 16 pixels now sit at the centre, [24, 40) x [24, 40).
    assert torch.allclose(after[:, 24:40, 24:40], before[:, 16:32, 48:64], atol=1e-5)
    assert not torch.allclose(after, before, atol=1e-2)


@pytest.mark.parametrize(("name", "size"), [("small", 96), ("resnet18", 96), ("efficientnet_lite0", 96),
                                            ("inception_v3", 160)])
def test_cell_map_pools_to_the_backbones_features(name: str, size: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = build_backbone(name, pretrained=name == "inception_v3", load_weights=False).eval()
    images = torch.rand(2, 3, size, size)
    cell_map = CellMap(backbone)
    maps = cell_map(images)
    pooled = maps.amax((2, 3)) if name == "small" else maps.mean((2, 3))  # the small CNN max-pools
    assert maps.dim() == 4 and maps.shape[1] == backbone.feature_dim and maps.shape[-1] >= 2
    assert torch.allclose(pooled, backbone(images), atol=1e-4)
    assert torch.equal(cell_map.pool(maps), pooled)


def test_cell_logits_are_the_head_on_each_cell_and_touch_no_batch_norm() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    classifier = Classifier("small", readout="lse", input_size=64).train()
    norms = {k: v.clone() for k, v in classifier.state_dict().items() if "running" in k}
    patches = torch.rand(2, 3, 3, 64, 64)
    logits = classifier.cell_logits(patches)
    assert logits.shape == (2, 3, 4, 4) and not logits.requires_grad
    assert classifier.backbone.training  # its mode is given back
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in norms.items())
    classifier.eval()
    maps = CellMap(classifier.backbone)(patches.flatten(0, 1))
    one_cell = classifier.head(maps[4, :, 2, 1])  # patch 4 = slide 1, patch 1
    assert torch.allclose(logits[1, 1, 2, 1], one_cell.squeeze(), atol=1e-5)


@pytest.mark.parametrize("frozen", [True, False])
def test_features_and_cell_logits_agree_with_each_alone(frozen: bool) -> None:
    """Frozen, one CNN pass serves both; its features still carry the gradient to the patches."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    classifier = Classifier("efficientnet_lite0", readout="lse", input_size=64, frozen=frozen).eval()
    patches = torch.rand(2, 3, 3, 64, 64, requires_grad=True)
    features, cells = classifier.features_and_cell_logits(patches)
    assert features.shape == (2, 3, 1280) and cells.shape == (2, 3, 2, 2) and not cells.requires_grad
    assert torch.allclose(features, classifier.features(patches), atol=1e-4)
    assert torch.allclose(cells, classifier.cell_logits(patches), atol=1e-4)
    features.sum().backward()
    assert patches.grad is not None and float(patches.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="per-patch head"):
        Classifier("small", readout="gru", input_size=64, frozen=True).features_and_cell_logits(patches)


def test_recentre_needs_a_per_patch_head() -> None:
    with pytest.raises(ConfigError, match="recentre=True.*got gru"):
        small_config(recentre=True, readout="gru")
    assert small_config(recentre=True, readout="lse").recentre


def test_the_readout_reads_the_moved_boxes() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    plain = build_model("tiny", **FAST).eval()
    moved = build_model("tiny", recentre=True, **FAST).eval()
    moved.load_state_dict(plain.state_dict())  # no weights of its own
    sources = [textured_source(seed=0), textured_source(96, 128, seed=1)]
    with torch.no_grad():
        a, b = plain(sources), moved(sources)
    # The tree up to the last layer is the same; the last boxes keep their side and move by less than it.
    assert all(torch.equal(x, y) for x, y in zip(a.rois[:-1], b.rois[:-1], strict=True))
    assert torch.equal(a.thetas[-1], b.thetas[-1])  # the heads' choice, as they made it
    assert torch.allclose(a.rois[-1][..., :2, :2], b.rois[-1][..., :2, :2])
    shift = (b.rois[-1][..., :2, 2] - a.rois[-1][..., :2, 2]).abs()
    half_side = a.rois[-1][..., 0, 0].abs().unsqueeze(-1)
    assert bool((shift < half_side).all()) and bool((shift > 0).any())
    # Each moved patch is a direct read of its moved box, and that is what the classifier scored.
    direct = read_views(sources, b.rois[-1], moved.config.final_size, torch.device("cpu"))
    assert torch.equal(b.patches[-1], direct)
    assert torch.allclose(b.logit, moved.classifier(direct).logit)
    assert b.boxes_level0[-1].shape == a.boxes_level0[-1].shape


def test_a_direct_read_keeps_the_boxes_and_reads_them_from_the_slide() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # The last box a small share of its parent, as at 1 um/px: the sampled patch is upsampled from few
    # pixels of its parent's read, the direct one holds the box's own detail.
    sizes = {**FAST, "layer_scales": [0.5, 0.5, 0.2]}
    sampled = build_model("tiny", **sizes).eval()
    direct = build_model("tiny", final_read="direct", **sizes).eval()
    direct.load_state_dict(sampled.state_dict())  # no weights of its own
    sources = [textured_source(seed=0), textured_source(96, 128, seed=1)]
    with torch.no_grad():
        a, b = sampled(sources), direct(sources)
    assert all(torch.equal(x, y) for x, y in zip(a.rois, b.rois, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a.boxes_level0, b.boxes_level0, strict=True))
    read = read_views(sources, a.rois[-1], direct.config.final_size, torch.device("cpu"))
    assert torch.equal(b.patches[-1], read)
    assert not torch.allclose(a.patches[-1], read, atol=1e-3)  # the sampled patches are another image
    assert torch.allclose(b.logit, direct.classifier(read).logit)


class CountingSource:
    """A slide source that records the output pixels of every read."""

    def __init__(self, source: TensorRegionSource) -> None:
        self.source, self.pixels = source, 0

    @property
    def slide_size(self) -> tuple[int, int]:
        return self.source.slide_size

    def read(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        self.pixels += rois.shape[0] * size**2
        return self.source.read(rois, size)


def bench_pixels_per_slide(config: MagNetConfig) -> int:
    """``bench/zoom_table.py``'s count of the output pixels a model reads per slide."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        from zoom_table import pixels_per_slide
    finally:
        sys.path.pop(0)
    return int(pixels_per_slide(config))


@pytest.mark.parametrize("step", [{}, {"final_read": "direct"}, {"recentre": True, "readout": "lse"},
                                  {"recentre": True, "final_read": "direct", "readout": "lse"}])
def test_a_direct_read_makes_no_parent_read_for_the_last_layer(step: dict) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", **{**FAST, **step}).eval()
    source = CountingSource(textured_source(seed=0))
    with torch.no_grad():
        model([source])
    config = model.config
    parents = config.patches_at(config.num_layers - 1)
    layers_before = config.view_size**2 + config.read_size**2 + config.patches_at(1) * config.read_size**2
    finals = config.patches_at(config.num_layers) * config.final_size**2
    if step == {"final_read": "direct"}:  # only the final boxes, each read at final_size
        assert source.pixels == layers_before + finals
    else:  # each last-layer parent read at final_read_size, the patches drawn from it (and moved: read again)
        assert source.pixels == layers_before + parents * config.final_read_size**2 + finals * config.recentre
    assert source.pixels == bench_pixels_per_slide(config)  # what the bench reports


@pytest.mark.parametrize("step", [{"recentre": True}, {"final_read": "direct"}])
def test_the_oracle_keeps_its_given_boxes(step: dict) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("tiny", **step, **{**FAST, "zoom": "oracle"}).eval()
    sources = [textured_source(seed=0)]
    rois = torch.eye(3, dtype=torch.float64).repeat(1, 8, 1, 1)
    rois[..., 0, 0] = rois[..., 1, 1] = 0.125
    with torch.no_grad():
        out = model(sources, final_rois=rois)
    assert torch.equal(out.rois[-1], rois)
    read = read_views(sources, rois, model.config.final_size, torch.device("cpu"))
    assert torch.equal(out.patches[-1], read)


def test_the_detail_of_a_final_patch_is_its_read() -> None:
    # A 2-layer tree: final patch n's parent is box n // 2 of layer 1 (side 1000 level-0 px).
    parents = [[0, 0, 1000, 1000]]
    finals = [[0, 0, 330, 330], [100, 100, 700, 700]]
    tree: dict = dict(patches_per_layer=[1, 2], aux_layers=[], final_size=224, final_read_size=448)
    # Sampled from the parent's 448-px read: 0.33 of it is 148 px of slide; 0.6 of it would be 269, but
    # the patch has only 224 pixels.
    assert final_detail_px(small_config(**tree), [parents, finals], 4000) == pytest.approx([147.84, 224.0])
    # Read at its box: final_size pixels of the box, whatever its side.
    for step in ({"final_read": "direct"}, {"recentre": True, "readout": "lse"}, {"zoom": "oracle"}):
        config = small_config(**tree, **step)
        assert final_detail_px(config, [parents, finals], 4000) == pytest.approx([224.0, 224.0])
    # One layer: the parent is the root view.
    one = small_config(**{**tree, "patches_per_layer": [2]})
    assert final_detail_px(one, [finals], root_side=2000) == pytest.approx([73.92, 134.4])
