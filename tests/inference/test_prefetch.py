"""Reading ahead (``magnet.inference.prefetch``) changes when slides are read, never what is predicted: the
same predictions with and without it, every batch size; the queue is bounded; every slide opened is closed;
a slide that fails is a prediction with its error, never the end of the stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from magnet.config_io import config_from_dict
from magnet.errors import SlideError
from magnet.inference.prefetch import PrereadSource, SlideFeeder
from magnet.inference.stream import stream_predictions
from magnet.models.magnet import MagNet
from magnet.slides.base import Slide
from magnet.slides.reader import RegionReader
from magnet.slides.registry import open_slide, register_scheme
from magnet.training.recipe import TrainConfig

MODEL = {
    "patches_per_layer": [2, 2], "view_size": 32, "read_size": 64, "final_size": 32, "final_read_size": 64,
    "classifier_input_size": 32, "backbone": "small", "aux_backbone": "small", "gru_hidden": 8,
    "head_branch_channels": 4, "aux_layers": [1], "sampler": "bilinear",
}
URIS = [f"synth:seed={s},size=2048x2048,lesion=negative" for s in range(5)]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> MagNet:
    torch.manual_seed(0)
    cfg = config_from_dict(TrainConfig, {"model": MODEL, "accelerator": "cpu"})
    return MagNet(cfg.model, load_weights=False).eval()


class _Counted(Slide):
    """A small in-memory slide that counts how many of its kind are open; ``bad`` ones fail every read."""

    backend = "test-counted"
    lock = threading.Lock()
    open_now = 0
    opened = 0

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        with _Counted.lock:
            _Counted.open_now += 1
            _Counted.opened += 1
        self._closed = False

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return ((256, 256),)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if "bad" in self.path:
            raise SlideError(self.path, "tile 0 is truncated (test)")
        return np.full((size[1], size[0], 3), 120, np.uint8)

    def close(self) -> None:
        with _Counted.lock:
            if not self._closed:
                _Counted.open_now -= 1
            self._closed = True


register_scheme("counted", _Counted)


def _key(pred):  # type: ignore[no-untyped-def]
    return pred.slide, pred.probability, pred.layers, pred.running_probabilities, pred.error


@pytest.mark.parametrize(("batch_size", "workers", "ahead"), [(1, 2, 2), (2, 1, 1), (3, 2, 5)])
def test_reading_ahead_gives_the_predictions_of_reading_in_place(model: MagNet, batch_size: int, workers: int,
                                                                 ahead: int) -> None:
    plain = [_key(p) for p in stream_predictions(model, URIS, batch_size=batch_size, ahead=0)]
    ahead_of = [_key(p) for p in stream_predictions(model, URIS, batch_size=batch_size, workers=workers,
                                                    ahead=ahead)]
    assert [k[0] for k in plain] == URIS
    assert ahead_of == plain  # bitwise: the same reads, the same batches


@pytest.mark.parametrize(("batch_size", "in_flight"), [(1, 2), (2, 2), (1, 3)])
def test_batches_in_flight_at_once_give_the_predictions_of_one_at_a_time(model: MagNet, batch_size: int,
                                                                         in_flight: int) -> None:
    model.train()  # a caller's model in training mode: the stream predicts in evaluation mode and restores it
    alone = [_key(p) for p in stream_predictions(model, URIS, batch_size=batch_size, ahead=0)]
    together = [_key(p) for p in stream_predictions(model, URIS, batch_size=batch_size, ahead=2,
                                                    in_flight=in_flight)]
    assert model.training
    model.eval()
    assert together == alone  # in the order of the slides, bitwise


@pytest.mark.parametrize(("reader_threads", "in_flight", "per_slide"),
                         [(2, 1, 2), (2, 2, 1), (4, 2, 2), (1, 3, 1)])
def test_the_batches_in_flight_share_the_reader_threads(model: MagNet, monkeypatch, reader_threads: int,
                                                       in_flight: int, per_slide: int) -> None:
    import magnet.inference.stream as stream_module

    seen: list[int] = []

    class Spy(SlideFeeder):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            seen.append(kwargs["reader_threads"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stream_module, "SlideFeeder", Spy)
    preds = list(stream_predictions(model, URIS[:2], reader_threads=reader_threads, in_flight=in_flight))
    assert seen == [per_slide] and len(preds) == 2 and not any(p.error for p in preds)


def test_closing_the_stream_early_closes_the_slides_of_the_batches_in_flight(model: MagNet) -> None:
    _Counted.open_now = 0
    stream = stream_predictions(model, [f"counted:{i}" for i in range(8)], batch_size=1, in_flight=3)
    assert not next(stream).error
    stream.close()
    assert _Counted.open_now == 0


def test_a_preread_root_view_is_what_the_reader_reads_and_is_used_once() -> None:
    reader = RegionReader(open_slide(URIS[0]), threads=1)
    source = PrereadSource(reader)
    root = torch.eye(3, dtype=torch.float64).unsqueeze(0)
    source.preread([32, 64, 32])
    want = RegionReader(open_slide(URIS[0]), threads=1).read(root, 32)
    before = reader.regions_read
    assert torch.equal(source.read(root, 32), want) and reader.regions_read == before  # no read: pre-read
    assert torch.equal(source.read(root, 32), want) and reader.regions_read > before  # once only
    source.close()
    source.close()  # closing twice is harmless


def test_the_feeder_holds_at_most_ahead_slides_and_closes_what_it_opened() -> None:
    _Counted.open_now = _Counted.opened = 0
    uris = [f"counted:{i}" for i in range(10)]
    with SlideFeeder(uris, root_sizes=(16,), workers=2, ahead=3) as feeder:
        items = iter(feeder)
        first = next(items)
        assert first.slide == "counted:0" and first.source is not None
        assert _Counted.opened <= 1 + 3 + 1  # the one handed out, `ahead` more, and one being submitted
        first.source.close()
        second = next(items)
        assert second.source is not None
        second.source.close()
    assert _Counted.open_now == 0  # leaving early closed every slide read ahead
    assert _Counted.opened < len(uris)


def test_a_slide_that_fails_is_a_prediction_with_its_error(model: MagNet) -> None:
    _Counted.open_now = 0
    uris = ["counted:a", "counted:bad", "counted:b", "counted:bad2", "nowhere/missing.svs"]
    for ahead, in_flight in ((0, 1), (2, 1), (2, 2)):
        preds = {p.slide: p for p in stream_predictions(model, uris, batch_size=2, ahead=ahead,
                                                        in_flight=in_flight)}
        assert sorted(preds) == sorted(uris)
        assert not preds["counted:a"].error and not preds["counted:b"].error
        assert preds["counted:bad"].error == "counted:bad: tile 0 is truncated (test)"
        assert preds["counted:bad"].unreadable and preds["counted:bad"].layers == []
        assert "no such file" in preds["nowhere/missing.svs"].error
        assert _Counted.open_now == 0
