"""Colour maps on region sources: stain augmentation and Reinhard normalisation (magnet.slides.colour)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import magnet.synth  # noqa: F401 - registers the synth: scheme
from magnet.geometry import RegionSource
from magnet.slides.colour import (
    HED_FROM_RGB_OD,
    RGB_OD_FROM_HED,
    ColourJitter,
    JitteredSource,
    ReinhardSource,
    jitter_images,
    lab_stats,
    normaliser,
    reinhard,
)
from magnet.slides.pool import SlidePool
from magnet.slides.tensor_source import TensorRegionSource


def _images(seed: int = 0, n: int = 2, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.7 * torch.rand(n, 3, size, size, generator=g)
    x[:, :, :3, :3] = 0.0  # black: outside the slide or removed by the grey filter
    return x


def test_identity_draw_changes_nothing() -> None:
    x = _images()
    assert torch.equal(jitter_images(x, ColourJitter()), x)
    assert torch.allclose(jitter_images(x, ColourJitter(hed_scale=(1.0, 1.0, 1.0), brightness=1.0)), x)


def test_hed_scaling_against_a_hand_computation() -> None:
    # One pixel: OD = -ln((255 x + 1) / 256); doubling haematoxylin doubles the H part of the OD.
    x = torch.tensor([0.8, 0.5, 0.7]).view(1, 3, 1, 1)
    od = -np.log((255 * np.array([0.8, 0.5, 0.7]) + 1) / 256)
    c = od @ HED_FROM_RGB_OD.numpy()
    c[0] *= 2.0
    expected = (256 * np.exp(-(c @ RGB_OD_FROM_HED.numpy())) - 1) / 255
    out = jitter_images(x, ColourJitter(hed_scale=(2.0, 1.0, 1.0)))
    assert np.allclose(out.view(3).numpy(), np.clip(expected, 0, 1), atol=1e-5)
    assert (out.view(3) < x.view(3)).all()  # more stain: less light in every channel


def test_values_stay_in_range_and_black_stays_black() -> None:
    x = _images()
    strong = ColourJitter((1.9, 0.1, 1.5), (0.4, -0.4, 0.2), 1.9, 1.9, 1.9, blur_px=1.0, jpeg_quality=30)
    out = jitter_images(x, strong)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out[:, :, :3, :3] == 0).all() and not torch.equal(out, x)


def test_jittered_source_gives_every_read_the_same_colours_and_no_gradient() -> None:
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.3
    plain = TensorRegionSource(image)
    jitter = ColourJitter((1.2, 0.9, 1.0), (0.02, -0.03, 0.0), 1.05, 0.95, 1.1)
    source = JitteredSource(plain, jitter)
    assert isinstance(source, RegionSource) and source.slide_size == plain.slide_size
    root = torch.eye(3).unsqueeze(0)
    half = torch.tensor([[[0.5, 0.0, -0.5], [0.0, 0.5, -0.5], [0.0, 0.0, 1.0]]])
    for rois, size in ((root, 64), (half, 32)):  # a pointwise map: each read is the map of the plain read
        assert torch.allclose(source.read(rois, size), jitter_images(plain.read(rois, size), jitter))
    params = torch.nn.Parameter(torch.ones(1))
    out = source.read(root, 16) * params  # the model's graph starts after the read
    assert not source.read(root, 16).requires_grad and out.requires_grad


def test_reinhard_matches_the_target_statistics() -> None:
    x = _images(3, n=1, size=32)
    target = lab_stats(_images(7, n=1, size=32) * torch.tensor([0.9, 0.6, 0.8]).view(1, 3, 1, 1))
    out = reinhard(x, lab_stats(x), target)
    got = lab_stats(out)
    assert np.allclose(got.mean, target.mean, atol=2e-3) and np.allclose(got.std, target.std, rtol=0.05)
    assert (out[:, :, :3, :3] == 0).all()


def test_reinhard_makes_two_centres_look_alike() -> None:
    uri = "synth:seed=3,size=40000x40000,lesion=macro,version=2,texture=camelyon16"
    roi = torch.tensor([[[0.06, 0.0, 0.0], [0.0, 0.06, 0.0], [0.0, 0.0, 1.0]]])
    plain, normalised = SlidePool(), SlidePool(wrap=normaliser("reinhard"))
    means = {}
    for name, pool in (("plain", plain), ("normalised", normalised)):
        reads = [pool.get(f"{uri},centre={c}").read(roi, 64).mean(dim=(0, 2, 3)) for c in ("pale", "dark")]
        means[name] = float((reads[0] - reads[1]).abs().max())
    assert isinstance(normalised.get(f"{uri},centre=pale"), ReinhardSource)
    assert means["normalised"] < means["plain"] / 3, means
    with pytest.raises(ValueError, match="unknown stain normalisation 'macenko'"):
        normaliser("macenko")
    assert normaliser("none") is None
