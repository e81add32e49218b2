"""Every variant x every zoom mode x each lever: forward, who learns, and a state_dict round trip.

Zoom modes (``magnet.models.zoom``, docs/method.md §8): only ``learned`` evaluates the heads, so only there
do they get a gradient; in ``fixed`` / ``random`` / ``oracle`` they get none at all and everything else still
learns. Levers (``magnet.models.zoom_levers``, docs/method.md §9): with ``theta_grad=false`` the heads learn
only through head MIL. The variants run with the small CNNs and small views so the whole file stays fast.
"""

from __future__ import annotations

import pytest
import torch
from model_fixtures import textured_source

from magnet.models import ZOOM_STRATEGIES, MagNet, build_model
from magnet.models.model_config import SIBLING_LAYOUTS, ZOOMS
from magnet.models.zoom_levers import SIBLING_LAYOUT_BUILDERS
from magnet.training.losses import LossWeights, magnet_loss

FAST = dict(
    backbone="small", aux_backbone="small", gru_hidden=8, head_branch_channels=2, head_blocks=1,
    view_size=16, read_size=32, final_size=16, final_read_size=32, classifier_input_size=16,
)
HEAD_MIL = dict(sibling_layout="strips", head_mil=True)
LEVERS: dict[str, dict[str, object]] = {
    "paper": {},
    "strips": {"sibling_layout": "strips"},
    "head_mil": HEAD_MIL,
    "tissue_strips": {"sibling_layout": "tissue_strips", "head_mil": True},
    "highpass": {"head_highpass": 2.0},
    "no_theta_grad": {**HEAD_MIL, "theta_grad": False},
    "theta_grad_blur": {"theta_grad_blur": 1.0},
    "recentre": {**HEAD_MIL, "theta_grad": False, "readout": "lse", "recentre": True},
}
CASES = [
    (variant, zoom, lever)
    for variant in ("tiny", "magnet3", "magnet4")
    for zoom in ZOOMS
    for lever in (LEVERS if variant == "tiny" else ("paper", "no_theta_grad", "theta_grad_blur"))
]


def test_every_choice_has_its_part() -> None:
    assert set(ZOOM_STRATEGIES) == set(ZOOMS)
    assert set(SIBLING_LAYOUT_BUILDERS) == set(SIBLING_LAYOUTS)
    assert [name for name in ZOOMS if ZOOM_STRATEGIES[name].uses_heads] == ["learned"]
    assert [name for name in ZOOMS if ZOOM_STRATEGIES[name].needs_final_rois] == ["oracle"]


def _final_rois(model: MagNet, batch: int) -> torch.Tensor | None:
    """Boxes of 1/8 of the slide at fixed spots, when the mode needs them."""
    if not model.needs_final_rois:
        return None
    count = model.config.patches_at(model.config.num_layers)
    rois = torch.eye(3, dtype=torch.float64).repeat(batch, count, 1, 1)
    rois[..., 0, 0] = rois[..., 1, 1] = 0.125
    rois[..., :2, 2] = torch.linspace(-0.7, 0.7, batch * count * 2, dtype=torch.float64).view(batch, count, 2)
    return rois


def _run(model: MagNet, sources: list, final_rois: torch.Tensor | None):  # type: ignore[no-untyped-def]
    return model(sources, generator=torch.Generator().manual_seed(0), final_rois=final_rois)


def _learns(p: torch.nn.Parameter) -> bool:
    return p.grad is not None and bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().max()) > 0


@pytest.mark.parametrize(("variant", "zoom", "lever"), CASES)
def test_forward_gradients_and_round_trip(variant: str, zoom: str, lever: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(variant, zoom=zoom, **FAST, **LEVERS[lever]).train()
    sources = [textured_source(seed=0), textured_source(64, 96, seed=1)]
    rois = _final_rois(model, len(sources))
    out = _run(model, sources, rois)
    labels = torch.tensor([0.0, 1.0])
    assert out.logit.shape == (2,) and torch.isfinite(out.logit).all()
    assert len(out.thetas) == model.config.num_layers

    heads = {id(p) for p in model.head_parameters()}
    assert heads, "every variant has heads"
    head_mil = model.uses_heads and model.config.head_mil
    assert sorted(out.head_logits) == (list(range(1, model.config.num_layers + 1)) if head_mil else [])
    if model.uses_heads and not model.config.theta_grad:
        # theta is cut: the losses without head MIL leave the heads alone.
        without_mil = magnet_loss(out, labels, LossWeights(head_mil=0.0)).total
        grads = torch.autograd.grad(without_mil, list(model.head_parameters()), retain_graph=True,
                                    allow_unused=True)
        assert all(g is None or float(g.abs().max()) == 0 for g in grads)
        assert not any(t.requires_grad for t in out.thetas)
    magnet_loss(out, labels).total.backward()
    # The temperature only sharpens the sparsemax map, whose sole use is theta: with theta cut it is idle.
    idle_temperature = model.uses_heads and not model.config.theta_grad
    for name, p in model.named_parameters():
        if id(p) in heads and not model.uses_heads:
            assert p.grad is None, f"{name}: the heads are not evaluated under zoom={zoom}"
        elif idle_temperature and name.endswith("heads.log_temperature"):
            assert p.grad is None or float(p.grad.abs().max()) == 0, name
        else:
            assert _learns(p), f"{name}: no finite non-zero gradient under zoom={zoom}, lever={lever}"

    # A fresh model (other initial weights) with the state dict computes the same, in eval mode.
    torch.manual_seed(1)
    fresh = build_model(variant, zoom=zoom, **FAST, **LEVERS[lever])
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    with torch.no_grad():
        a, b = _run(model, sources, rois), _run(fresh, sources, rois)
    assert torch.equal(a.logit, b.logit)
    assert all(torch.equal(x, y) for x, y in zip(a.thetas, b.thetas, strict=True))
    assert a.head_logits.keys() == b.head_logits.keys()
    assert all(torch.equal(a.head_logits[k], b.head_logits[k]) for k in a.head_logits)
