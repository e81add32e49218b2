"""Head value (docs/method.md §9): each final patch's ancestor heads are read at its centre, and the loss
teaches the heads, not the classifier."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import small_config, textured_source

from magnet.config_io import apply_override
from magnet.errors import ConfigError
from magnet.geometry import cell_centres, dihedral_matrix
from magnet.models import build_model
from magnet.models.head_value import ancestor_scores, feature_novelty, gate_by_label
from magnet.models.magnet import MagNetOutput
from magnet.training.losses import LossWeights, head_value_loss, magnet_loss
from magnet.training.recipe import TrainConfig

LEVERS = dict(sibling_layout="strips", head_mil=True, readout="lse", min_scale=0.3, max_scale=0.6,
              random_zoom_min_scale=0.3)


def _forward(seed: int = 0, dihedral: int = 0, **overrides: object):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = build_model(small_config(**{**LEVERS, **overrides}))
    sources = [textured_source(seed=seed), textured_source(seed=seed + 1)]
    roots = torch.stack([dihedral_matrix(dihedral, torch.float64)] * 2)
    return model, model(sources, roots)


def test_one_score_per_final_patch_and_layer_frozen_children_masked() -> None:
    model, out = _forward()  # tiny: P = [2, 2, 2], the first child at layer 2 frozen
    scores, mask = ancestor_scores(out)
    assert scores.shape == (2, 3, 8) and mask.shape == (3, 8)
    assert bool(mask[0].all()) and bool(mask[2].all())
    # Depth-first: final patches 0-1 and 4-5 descend from the frozen first child of each layer-1 patch.
    assert mask[1].tolist() == [False, False, True, True, False, False, True, True]


@pytest.mark.parametrize("dihedral", [0, 3, 6])
def test_score_is_read_at_the_final_centre_in_the_parent_view(dihedral: int) -> None:
    _, out = _forward(dihedral=dihedral)
    size = out.scores[1].shape[-1]
    # A ramp map whose value is the horizontal view coordinate u in [-1, 1] at each pixel centre: bilinear
    # sampling of it returns u itself, so the score read is where the centre lies in the parent's view.
    ramp = ((torch.arange(size) * 2 + 1) / size - 1).view(1, 1, 1, size).expand_as(out.scores[1])
    out.scores = {1: ramp.clone()}
    scores, _ = ancestor_scores(out)
    centres = out.rois[-1][..., :2, 2]  # canvas (x, y); layer 1's parent is the root ROI
    local = torch.linalg.solve(out.root_rois.unsqueeze(1), torch.cat(
        [centres, torch.ones_like(centres[..., :1])], dim=-1).unsqueeze(-1))[..., 0, 0]
    inside = local.abs() < 1 - 1 / size  # the ramp is linear between the outermost pixel centres
    assert bool(inside.any())
    assert torch.allclose(scores[:, 0][inside], local[inside].float(), atol=1e-5)


def test_head_value_loss_trains_the_heads_not_the_classifier() -> None:
    model, out = _forward()
    loss = head_value_loss(out)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for layer in model.layers:
        grads = [p.grad for p in layer.head_parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in model.classifier.parameters())  # the target is detached


def test_head_value_weight_adds_the_term_and_zero_leaves_it_out() -> None:
    _, out = _forward()
    labels = torch.tensor([1.0, 0.0])
    off = magnet_loss(out, labels, LossWeights())
    on = magnet_loss(out, labels, LossWeights(head_value=2.0))
    assert off.head_value.item() == 0.0 and on.head_value.item() > 0
    assert torch.allclose(on.total, off.total + 2.0 * on.head_value)


def test_head_value_needs_patch_logits() -> None:
    _, out = _forward(readout="gru")
    assert out.patch_logits is None
    with pytest.raises(ValueError, match="readout max, lse or attention"):
        head_value_loss(out)
    with pytest.raises(ConfigError, match="loss.head_value"):
        TrainConfig(model=small_config(readout="gru"), loss=LossWeights(head_value=1.0))


def test_controls_have_no_heads_to_teach() -> None:
    _, out = _forward(zoom="fixed")
    assert out.scores == {}
    assert float(magnet_loss(out, torch.tensor([1.0, 0.0]), LossWeights(head_value=1.0)).head_value) == 0.0


def _with_features(features: torch.Tensor) -> MagNetOutput:
    return MagNetOutput(logit=torch.zeros(features.shape[0]), running_logits=torch.zeros(features.shape[:2]),
                        patch_features=features)


def test_novelty_is_highest_for_the_patch_unlike_the_rest() -> None:
    features = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    features[1, 4] += 5.0  # one patch of the batch far from the others
    novelty = feature_novelty(_with_features(features))
    assert novelty.shape == (3, 6)
    assert bool(((novelty > 0) & (novelty < 1)).all())
    assert divmod(int(novelty.argmax()), 6) == (1, 4)
    assert float(novelty[1, 4]) > 0.9  # several standard deviations above the batch's mean distance


@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 3, 8)])
def test_novelty_without_anything_unusual_is_one_half(shape: tuple[int, int, int]) -> None:
    novelty = feature_novelty(_with_features(torch.ones(shape)))
    assert torch.equal(novelty, torch.full(shape[:2], 0.5))


def test_novelty_target_trains_the_heads_and_needs_no_patch_logits() -> None:
    model, out = _forward(readout="gru")
    assert out.patch_logits is None and out.patch_features is not None
    assert out.patch_features.shape[:2] == out.rois[-1].shape[:2] and not out.patch_features.requires_grad
    novelty = LossWeights(head_value=1.0, head_value_target="novelty")
    loss = magnet_loss(out, torch.tensor([1.0, 0.0]), novelty)
    assert float(loss.head_value.detach()) > 0
    loss.head_value.backward()
    first_heads = list(model.layers[0].head_parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in first_heads)
    assert all(p.grad is None for p in model.classifier.parameters())
    TrainConfig(model=small_config(readout="gru"), loss=novelty)  # no ConfigError: no patch logit needed


def test_head_value_target_is_a_recipe_key_and_checked() -> None:
    cfg = apply_override(TrainConfig(model=small_config(**LEVERS)), "loss.head_value_target=novelty")
    assert cfg.loss.head_value_target == "novelty"
    with pytest.raises(ConfigError, match="head_value_target"):
        LossWeights(head_value_target="curiosity")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="head_value_target"):
        apply_override(cfg, "loss.head_value_target=curiosity")


def test_cell_centres_run_along_x_by_column_and_y_by_row() -> None:
    centres = cell_centres(2, 3)
    expected = [[-2 / 3, -0.5], [0.0, -0.5], [2 / 3, -0.5], [-2 / 3, 0.5], [0.0, 0.5], [2 / 3, 0.5]]
    assert torch.allclose(centres, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("dihedral", [0, 5])
def test_scores_at_cell_points_are_read_where_each_cell_lies_in_the_parent_view(dihedral: int) -> None:
    _, out = _forward(dihedral=dihedral)
    points = cell_centres(3, 3)
    scores, mask = ancestor_scores(out, points)
    centre, centre_mask = ancestor_scores(out)
    assert scores.shape == (*centre.shape, 9) and torch.equal(mask, centre_mask)
    assert torch.allclose(scores[..., 4], centre)  # the middle cell's centre is the patch's
    size = out.scores[1].shape[-1]
    ramp = ((torch.arange(size) * 2 + 1) / size - 1).view(1, 1, 1, size).expand_as(out.scores[1])
    out.scores = {1: ramp.clone()}
    scores, _ = ancestor_scores(out, points)
    homogeneous = torch.cat([points, torch.ones(9, 1, dtype=torch.float64)], -1).view(1, 1, 9, 3, 1)
    canvas = out.rois[-1].unsqueeze(2) @ homogeneous  # (B, N_L, 9, 3, 1)
    local = torch.linalg.solve(out.root_rois.view(-1, 1, 1, 3, 3), canvas)[..., 0, 0]  # u in layer 1's view
    inside = local.abs() < 1 - 1 / size
    assert bool(inside.any()) and bool((local[..., 0] != local[..., 2]).any())  # cells apart in the view
    assert torch.allclose(scores[:, 0][inside], local[inside].float(), atol=1e-5)


def test_cells_target_teaches_the_heads_a_map_per_patch_from_the_forward_cell_logits() -> None:
    torch.manual_seed(0)
    model = build_model(small_config(**LEVERS))
    sources = [textured_source(seed=0), textured_source(seed=1)]
    plain = model(sources)
    assert plain.patch_cell_logits is None
    with pytest.raises(ValueError, match="cell_logits=True"):
        head_value_loss(plain, "cells")
    out = model(sources, cell_logits=True)
    cells = out.patch_cell_logits
    assert cells is not None and cells.shape[:2] == out.rois[-1].shape[:2] and cells.shape[-1] > 1
    assert not cells.requires_grad
    weights = LossWeights(head_value=1.0, head_value_target="cells")
    assert weights.wants_cell_logits and not LossWeights(head_value=1.0).wants_cell_logits
    loss = magnet_loss(out, torch.tensor([1.0, 0.0]), weights).head_value
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    assert all(any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in layer.head_parameters())
               for layer in model.layers)
    assert all(p.grad is None for p in model.classifier.parameters())


def test_cells_target_targets_each_cell_against_the_score_at_its_centre() -> None:
    _, out = _forward()
    assert out.patch_logits is not None
    count = out.patch_logits.shape[1]
    # Uniform cell maps: every cell's target is the one probability, so the loss is the centre loss.
    out.patch_cell_logits = out.patch_logits.detach()[..., None, None].expand(2, count, 1, 1).clone()
    assert torch.allclose(head_value_loss(out, "cells"), head_value_loss(out, "probability"))
    out.patch_cell_logits = torch.full((2, count, 4, 4), 3.0)
    out.patch_cell_logits[..., 1:, :] = -3.0  # only the top row of cells scores high
    scores, mask = ancestor_scores(out, cell_centres(4, 4))
    targets = torch.sigmoid(out.patch_cell_logits).flatten(2).unsqueeze(1).expand_as(scores)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets, reduction="none")
    assert torch.allclose(head_value_loss(out, "cells"), expected[:, mask].mean())


def test_cells_target_needs_a_per_patch_head() -> None:
    with pytest.raises(ConfigError, match="loss.head_value"):
        TrainConfig(model=small_config(readout="gru"),
                    loss=LossWeights(head_value=1.0, head_value_target="cells"))


@pytest.mark.parametrize("target", ["probability", "cells"])
def test_zero_negatives_target_zero_on_a_negative_slide_and_leave_a_positive_one(target: str) -> None:
    _, out = _forward()
    count = out.rois[-1].shape[1]
    out.patch_cell_logits = torch.full((2, count, 3, 3), 2.0)  # the classifier fires everywhere
    out.patch_logits = torch.full((2, count), 2.0)
    labels = torch.tensor([1.0, 0.0])
    gated = magnet_loss(out, labels, LossWeights(head_value=1.0, head_value_target=target,
                                                 head_value_negatives="zero")).head_value
    plain = magnet_loss(out, labels, LossWeights(head_value=1.0, head_value_target=target)).head_value
    points = cell_centres(3, 3) if target == "cells" else None
    scores, mask = ancestor_scores(out, points)
    if points is None:
        scores = scores.unsqueeze(-1)
    fired = torch.full_like(scores[0], torch.sigmoid(torch.tensor(2.0)).item())
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    positive = bce(scores[0], fired, reduction="none")  # slide 0: the target as computed
    negative = bce(scores[1], torch.zeros_like(fired), reduction="none")  # slide 1: 0 everywhere
    expected = torch.stack([positive, negative])[:, mask].mean()
    assert torch.allclose(gated, expected)
    assert not torch.allclose(gated, plain)  # the negative slide's targets were 0.88, not 0


def test_zero_negatives_is_a_checked_choice_and_the_gate_checks_its_labels() -> None:
    with pytest.raises(ConfigError, match="head_value_negatives"):
        LossWeights(head_value=1.0, head_value_negatives="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        gate_by_label(torch.ones(2, 4), torch.ones(3))
    config = apply_override(TrainConfig(), "loss.head_value_negatives=zero")
    assert config.loss.head_value_negatives == "zero"
