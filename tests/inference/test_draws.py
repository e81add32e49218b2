"""Random draws at inference repeat (``magnet.inference.draws``): a random zoom's boxes for a slide are the
same in any batch, after any use of torch's global generator, in every path that predicts (validation and
evaluation, streamed prediction, the refit's cache, explain), and differ with the run's seed; models that
draw nothing are predicted in batches as before."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from magnet.config_io import config_from_dict
from magnet.data.manifest import ManifestRow
from magnet.explain import explain_slides
from magnet.inference.draws import inference_batch_size, inference_generator, slide_generator
from magnet.inference.runner import predict_slides
from magnet.inference.stream import stream_predictions
from magnet.models.magnet import MagNet
from magnet.slides.pool import SlidePool
from magnet.training.readout_refit import final_patch_features
from magnet.training.recipe import TrainConfig

MODEL = {
    "patches_per_layer": [2, 2], "view_size": 32, "read_size": 64, "final_size": 32, "final_read_size": 64,
    "classifier_input_size": 32, "backbone": "small", "aux_backbone": "small", "gru_hidden": 8,
    "head_branch_channels": 4, "aux_layers": [], "sampler": "bilinear", "random_zoom_min_scale": 0.2,
}
URIS = [f"synth:seed={s},size=2048x2048,lesion=negative" for s in range(4)]


def _model(zoom: str) -> MagNet:
    torch.manual_seed(0)
    cfg = config_from_dict(TrainConfig, {"model": {**MODEL, "zoom": zoom}, "accelerator": "cpu"})
    return MagNet(cfg.model, load_weights=False).eval()


@pytest.fixture(scope="module")
def random_model() -> MagNet:
    return _model("random")


@pytest.fixture()
def pool() -> Iterator[SlidePool]:
    pool = SlidePool(threads=1)
    yield pool
    pool.close()


def _boxes(preds) -> dict[str, list[list[list[float]]]]:  # type: ignore[no-untyped-def]
    return {p.slide: p.layers for p in preds}


def test_a_slide_draws_its_own_boxes_in_any_batch_and_process_state(random_model: MagNet,
                                                                     pool: SlidePool) -> None:
    alone = _boxes(predict_slides(random_model, URIS, pool, batch_size=1, seed=3))
    torch.manual_seed(12345)  # whatever the process drew before
    torch.rand(1000)
    batched = _boxes(predict_slides(random_model, URIS[::-1], pool, batch_size=4, seed=3))
    assert batched == alone
    streamed = _boxes(stream_predictions(random_model, URIS, batch_size=3, ahead=0, seed=3))
    assert streamed == alone
    # The slides' boxes differ from one another and with the run's seed.
    assert alone[URIS[0]][-1] != alone[URIS[1]][-1]
    other_seed = _boxes(predict_slides(random_model, URIS, pool, batch_size=4, seed=4))
    assert all(other_seed[uri][-1] != alone[uri][-1] for uri in URIS)


def test_the_refit_cache_and_explain_read_the_boxes_of_evaluation(random_model: MagNet, pool: SlidePool,
                                                                  tmp_path: Path) -> None:
    rows = [ManifestRow(slide=uri, label=0) for uri in URIS[:2]]
    cached = final_patch_features(random_model, rows, pool, batch_size=2, seed=3).features
    torch.rand(1000)
    again = final_patch_features(random_model, rows, pool, batch_size=1, seed=3).features
    assert torch.equal(cached, again)
    evaluated = _boxes(predict_slides(random_model, URIS[:1], pool, seed=3))
    explained = explain_slides(random_model, URIS[:1], pool, tmp_path, seed=3)
    assert explained[0].ok
    assert explained[0].boxes == evaluated[URIS[0]]


def test_only_a_model_that_draws_at_inference_goes_one_slide_at_a_time(random_model: MagNet) -> None:
    fixed = _model("fixed")
    assert not fixed.draws_at_random and random_model.draws_at_random
    assert inference_batch_size(fixed, 4) == 4 and inference_batch_size(random_model, 4) == 1
    assert inference_generator(fixed, URIS) is None
    with pytest.raises(ValueError, match="one slide at a time.*got 2 slides"):
        inference_generator(random_model, URIS[:2])


def test_seed_zero_keeps_the_oracles_draws_by_name() -> None:
    # The oracle's per-slide draws (magnet.inference.oracle) were seeded by the name's CRC-32 alone.
    name = URIS[0]
    expected = torch.rand(3, generator=torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8"))))
    assert torch.equal(torch.rand(3, generator=slide_generator(name)), expected)
    assert not torch.equal(torch.rand(3, generator=slide_generator(name, seed=1)), expected)
