"""MagNet wiring (docs/method.md §2.5-§2.7, §4): patch counts, ROIs, gradients, robustness, determinism."""

from __future__ import annotations

import time

import pytest
import torch
from model_fixtures import smooth_image, textured_source

from magnet.errors import ConfigError
from magnet.geometry import dihedral_matrix, roi_to_level0_box
from magnet.models import MODELS, MagNet, build_model, model_config
from magnet.slides.tensor_source import TensorRegionSource
from magnet.training.losses import magnet_loss


def small_model(**overrides: object) -> MagNet:
    base: dict[str, object] = dict(
        view_size=24, read_size=48, final_size=32, final_read_size=64, classifier_input_size=32, gru_hidden=16
    )
    base.update(overrides)
    return build_model("tiny", **base)


def test_patches_per_layer_and_output_shapes() -> None:
    torch.manual_seed(0)
    model = small_model(patches_per_layer=(2, 3, 2), aux_layers=(1, 2, 3)).eval()
    sources = [textured_source(seed=0), textured_source(64, 96, seed=1)]
    out = model(sources)
    assert [t.shape[1] for t in out.thetas] == [2, 6, 12]
    assert [p.shape for p in out.patches] == [(2, 2, 3, 24, 24), (2, 6, 3, 24, 24), (2, 12, 3, 32, 32)]
    assert [r.shape for r in out.rois] == [(2, 2, 3, 3), (2, 6, 3, 3), (2, 12, 3, 3)]
    assert [b.shape for b in out.boxes_level0] == [(2, 2, 4), (2, 6, 4), (2, 12, 4)]
    assert [s.shape for s in out.support] == [(2, 2), (2, 4), (2, 12)]
    assert out.logit.shape == (2,) and out.running_logits.shape == (2, 12)
    assert torch.equal(out.logit, out.running_logits[:, -1])
    assert sorted(out.aux_logits) == [1, 2, 3] and all(v.shape == (2,) for v in out.aux_logits.values())
    # Level-0 boxes use each slide's own size.
    assert torch.allclose(out.boxes_level0[0][1], roi_to_level0_box(out.rois[0][1], (96, 64)))


def test_rois_compose_depth_first_and_frozen_patch_keeps_parent_roi() -> None:
    torch.manual_seed(0)
    model = small_model(patches_per_layer=(2, 3, 2)).eval()
    out = model([textured_source()])
    for layer in (1, 2):
        children = out.rois[layer].view(1, out.rois[layer - 1].shape[1], -1, 3, 3)
        theta = out.thetas[layer].detach().double().view(*children.shape[:3], 3)
        # Child centre c + h t, half-size h s, for child k of parent n at index n * K + k.
        parent = out.rois[layer - 1].unsqueeze(2)
        assert torch.allclose(children[..., 0, 0], parent[..., 0, 0] * theta[..., 0], atol=1e-6)
        assert torch.allclose(
            children[..., :2, 2], parent[..., :2, 2] + parent[..., 0:1, 0] * theta[..., 1:], atol=1e-6
        )
    # Layer 2's first child of every parent is the frozen patch: same ROI as its parent.
    frozen = out.rois[1].view(1, 2, 3, 3, 3)[:, :, 0]
    assert torch.allclose(frozen, out.rois[0], atol=1e-12)


def test_siblings_start_on_different_boxes() -> None:
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    out = model([textured_source()])
    for layer, boxes in zip(model.layers, out.boxes_level0, strict=True):
        siblings = boxes[0].view(-1, layer.num_children, 4)
        for family in siblings:
            distance = torch.cdist(family, family) + torch.eye(family.shape[0], dtype=family.dtype) * 1e9
            assert distance.min() > 10.0  # level-0 pixels; the slide is 192 x 256
    final = out.boxes_level0[-1][0]
    assert (torch.cdist(final, final) + torch.eye(final.shape[0], dtype=final.dtype) * 1e9).min() > 10.0


def _inside_parent(theta: torch.Tensor, size: int, parent_size: int) -> torch.Tensor:
    """Mask (N, S, S) of the output pixels of patches with ``theta`` (N, 3) that sample inside the parent's
    I' (one I' pixel away from its edge): only there can a patch equal a direct read of its ROI."""
    centres = (2 * torch.arange(size, dtype=theta.dtype) + 1) / size - 1
    s, tx, ty = theta[:, 0, None], theta[:, 1, None], theta[:, 2, None]
    limit = 1 - 2 / parent_size
    x_ok = (s * centres + tx).abs() < limit
    y_ok = (s * centres + ty).abs() < limit
    return y_ok[:, :, None] & x_ok[:, None, :]


def test_sampled_patch_equals_direct_read_of_its_roi() -> None:
    torch.manual_seed(0)
    model = small_model(patches_per_layer=(2, 3, 2), sampler="bilinear").eval()
    source = TensorRegionSource(smooth_image(300, 260, seed=5))
    out = model([source])
    read_sizes = [48, 48, 64]
    for patches, rois, theta, read in zip(out.patches, out.rois, out.thetas, read_sizes, strict=True):
        size = patches.shape[-1]
        direct = source.read(rois[0], size)
        inside = _inside_parent(theta[0].detach(), size, read).unsqueeze(1).expand_as(direct)
        assert inside.float().mean() > 0.3
        error = (patches[0].detach() - direct).abs()[inside].mean()
        shuffled = (patches[0].detach() - direct.roll(1, dims=0)).abs()[inside].mean()
        # Interpolation error only: bilinear resampling of I' against the antialiased direct read.
        assert error < 0.02, error
        assert shuffled > 10 * error  # the agreement is specific to each ROI


def test_dihedral_root_is_folded_into_every_roi() -> None:
    torch.manual_seed(0)
    model = small_model(sampler="bilinear").eval()
    source = TensorRegionSource(smooth_image(128, 128, seed=2))
    rot = dihedral_matrix(1).unsqueeze(0)
    out = model([source], root_rois=rot)
    # Every ROI keeps the rotation in its linear part: h * D.
    for rois in out.rois:
        linear = rois[0, :, :2, :2]
        half = linear.abs().sum(-1)[:, :1, None]
        assert torch.allclose(linear / half, rot[0, :2, :2].double().expand_as(linear), atol=1e-9)
    read_sizes = [48, 48, 64]
    for patches, rois, theta, read in zip(out.patches, out.rois, out.thetas, read_sizes, strict=True):
        direct = source.read(rois[0], patches.shape[-1])
        inside = _inside_parent(theta[0].detach(), patches.shape[-1], read).unsqueeze(1).expand_as(direct)
        assert (patches[0].detach() - direct).abs()[inside].mean() < 0.02


def _loss(model: MagNet, sources: list, generator: torch.Generator | None = None) -> tuple:
    out = model(sources, generator=generator)
    return out, magnet_loss(out, torch.tensor([0.0, 1.0][: len(sources)]))


# Parameters that legitimately get no gradient: none. BatchNorm running statistics are buffers, the
# ImageNet normalisation constants are buffers, and the frozen patch has no parameters at all.
NO_GRADIENT: set[str] = set()


def test_every_theta_and_every_parameter_gets_a_finite_nonzero_gradient() -> None:
    torch.manual_seed(0)
    model = small_model(patches_per_layer=(2, 3, 2), aux_layers=(1, 3)).train()
    sources = [textured_source(seed=0), textured_source(seed=1)]
    out, loss = _loss(model, sources, torch.Generator().manual_seed(0))
    theta_grads = torch.autograd.grad(loss.total, out.thetas, retain_graph=True)
    for layer, grad in enumerate(theta_grads, start=1):
        assert torch.isfinite(grad).all()
        learned = grad.view(2, -1, model.layers[layer - 1].num_children, 3)
        if model.config.has_frozen_patch(layer):
            learned = learned[:, :, 1:]  # the frozen identity is a constant: no head behind it
        assert (learned.abs().sum(-1) > 0).all(), f"layer {layer}: a theta without gradient"
    loss.total.backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if name not in NO_GRADIENT
        and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0)
    ]
    assert not missing, missing


@pytest.mark.parametrize(
    "image", [torch.zeros(3, 300, 200), torch.rand(3, 20, 40)], ids=["black", "tiny-slide"]
)
def test_no_nan_on_black_or_tiny_slides(image: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = small_model().train()
    out, loss = _loss(model, [TensorRegionSource(image)], torch.Generator().manual_seed(0))
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert all(torch.isfinite(t).all() for t in out.thetas)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_same_seed_same_outputs() -> None:
    def run() -> tuple[torch.Tensor, ...]:
        torch.manual_seed(3)
        model = small_model().train()
        out, loss = _loss(model, [textured_source(seed=4)], torch.Generator().manual_seed(7))
        loss.total.backward()
        grad = next(model.layers[0].parameters()).grad
        assert grad is not None
        return out.logit.detach(), out.thetas[-1].detach(), grad

    for a, b in zip(run(), run(), strict=True):
        assert torch.equal(a, b)


def test_named_variants_and_head_counts() -> None:
    assert set(MODELS) == {"magnet3", "magnet4", "tiny"}
    m3, m4 = model_config("magnet3"), model_config("magnet4")
    assert m3.patches_per_layer == (2, 3, 3) and m3.backbone == "inception_v3" and m3.aux_layers == (1, 3)
    assert m4.patches_per_layer == (2, 3, 2, 3) and m4.aux_layers == (1, 3)
    assert (m3.patches_at(3), m4.patches_at(4)) == (18, 36)
    # Heads without the expensive classifier: small backbones, same layer structure.
    light = {"backbone": "small", "aux_backbone": "small"}
    assert build_model("magnet3", **light).num_heads == [2, 4, 18]
    assert build_model("magnet4", **light).num_heads == [2, 4, 12, 36]
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("magnet5")
    with pytest.raises(ConfigError, match="unknown model option"):
        build_model("tiny", patches=3)


def test_magnet3_with_inception_runs_at_batch_one() -> None:
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model("magnet3", patches_per_layer=(2, 2, 1), frozen_patch=False).eval()
    with torch.no_grad():
        out = model([textured_source(seed=0)])
    assert out.running_logits.shape == (1, 4) and torch.isfinite(out.logit).all()
    assert out.patches[-1].shape[-1] == 224
    assert time.perf_counter() - start < 30
