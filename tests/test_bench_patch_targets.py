"""``bench/patch_targets.py``'s feature cache: a fit on the features just extracted and a fit on the same
features loaded from the cache read the very same tensor (values and memory layout), so the first call of
the bench and every later one report the same fresh readout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    from patch_targets import cache_array, cached_features
finally:
    sys.path.pop(0)


def test_cached_features_are_the_same_tensor_before_and_after_the_cache(tmp_path: Path) -> None:
    # the frozen CNN's maps come out channels-last: (slides * patches, D, h, w) viewed per slide
    maps = torch.randn(2 * 3, 16, 4, 4).contiguous(memory_format=torch.channels_last).view(2, 3, 16, 4, 4)
    slides = [{"features": cache_array(maps[j]), "label": j, "slide": f"s{j}"} for j in range(2)]
    torch.save({"slides": slides}, tmp_path / "cache.pt")
    loaded = torch.load(tmp_path / "cache.pt", weights_only=False)["slides"]

    fresh, cached = cached_features(slides).features, cached_features(loaded).features
    assert fresh.stride() == cached.stride()
    assert torch.equal(fresh, cached)
    assert slides[0]["features"].dtype == np.float16
    assert torch.equal(torch.from_numpy(slides[1]["features"]).float(), maps[1].half().float())
