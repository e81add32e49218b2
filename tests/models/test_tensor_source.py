"""TensorRegionSource: the in-memory RegionSource in canvas coordinates (docs/method.md §1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from model_fixtures import smooth_image

from magnet.geometry import RegionSource, compose, dihedral_matrix, roi_matrix
from magnet.slides.pixels import grey_filter_tensor
from magnet.slides.tensor_source import TensorRegionSource


def test_protocol_and_slide_size() -> None:
    source = TensorRegionSource(torch.rand(3, 30, 50))
    assert isinstance(source, RegionSource)
    assert source.slide_size == (50, 30)


def test_identity_read_is_the_slide_centred_on_the_black_square_canvas() -> None:
    image = torch.rand(3, 32, 64)
    out = TensorRegionSource(image).read(torch.eye(3).unsqueeze(0), 64)[0]
    # Canvas side 64: the image fills rows 16..47; the rest is black.
    assert torch.allclose(out[:, 16:48], image, atol=1e-5)
    assert out[:, :16].abs().max() < 1e-5 and out[:, 48:].abs().max() < 1e-5


def test_roi_reads_the_matching_pixels() -> None:
    image = torch.rand(3, 64, 64)
    # The top-left quadrant: centre (-0.5, -0.5), half-size 0.5, read at its native 32 px.
    out = TensorRegionSource(image).read(roi_matrix(-0.5, -0.5, 0.5).unsqueeze(0), 32)[0]
    assert torch.allclose(out, image[:, :32, :32], atol=1e-5)


def test_nested_roi_equals_direct_roi() -> None:
    source = TensorRegionSource(smooth_image(128, 128))
    parent = roi_matrix(0.2, -0.1, 0.6)
    child = compose(parent, torch.tensor([0.5, 0.3, -0.4]))
    direct = roi_matrix(0.2 + 0.6 * 0.3, -0.1 + 0.6 * -0.4, 0.3)
    assert torch.allclose(child, direct, atol=1e-5)
    assert torch.allclose(source.read(child[None], 16), source.read(direct[None], 16), atol=1e-5)


def test_dihedral_root_permutes_the_output_pixels() -> None:
    image = torch.rand(3, 16, 16)
    source = TensorRegionSource(image)
    plain = source.read(torch.eye(3)[None], 16)[0]
    flipped = source.read(dihedral_matrix(4)[None], 16)[0]  # flip-x
    rotated = source.read(dihedral_matrix(1)[None], 16)[0]
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-5)
    # rot90 maps output (x, y) to canvas (-y, x): a 90° rotation of the image.
    assert torch.allclose(rotated, torch.rot90(plain, 1, dims=(-2, -1)), atol=1e-5)


def test_coarse_reads_are_antialiased() -> None:
    # A one-pixel checkerboard must read as flat grey at low resolution, not as a moire pattern.
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    checker = ((yy + xx) % 2).float().expand(3, -1, -1)
    out = TensorRegionSource(checker).read(torch.eye(3)[None], 56)
    assert (out - 0.5).abs().max() < 0.02
    naive = F.grid_sample(
        checker[None],
        F.affine_grid(torch.eye(3)[None, :2], [1, 3, 56, 56], align_corners=False),
        align_corners=False,
    )
    assert (naive - 0.5).abs().max() > 0.2  # what plain grid_sample would have done


def test_batch_of_rois_at_several_levels_matches_single_reads() -> None:
    source = TensorRegionSource(smooth_image(200, 300, seed=3))
    rois = torch.stack([torch.eye(3), roi_matrix(0.1, 0.1, 0.05), roi_matrix(-0.3, 0.2, 0.4)])
    batch = source.read(rois, 24)
    singles = torch.cat([source.read(r[None], 24) for r in rois])
    assert torch.allclose(batch, singles, atol=1e-5)
    assert len(set(source.level_for(rois, 24).tolist())) > 1


def test_grey_filter_blackens_grey_pixels_only() -> None:
    image = torch.tensor([[0.9, 0.5], [0.9, 0.2], [0.9, 0.8]]).view(3, 1, 2)  # white-ish grey | purple
    out = grey_filter_tensor(image)
    assert out[:, 0, 0].abs().max() == 0 and torch.equal(out[:, 0, 1], image[:, 0, 1])
    source = TensorRegionSource(image.expand(3, 4, 2).contiguous(), grey_filter=True)
    assert source.read(roi_matrix(-0.5, 0.0, 0.5)[None], 2).abs().max() == 0
