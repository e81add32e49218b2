"""RegionReader: geometry (canvas -> level boxes, sub-pixel accuracy, nesting), levels, padding, grey filter,
dihedral maps, counters, threads, pixel formats and errors (docs/method.md §1, §2.6, §2.8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from magnet.errors import SlideError
from magnet.geometry import compose, dihedral_matrix, roi_matrix
from magnet.slides.base import Slide
from magnet.slides.memory import MemorySlide
from magnet.slides.pixels import to_rgb_uint8
from magnet.slides.reader import DIHEDRAL_FLAT, RegionReader, apply_dihedral
from magnet.slides.tiff_writer import write_pyramidal_tiff


def _colour_noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Saturated random texture: R - G >= 70 everywhere, so the grey filter never removes it."""
    rng = np.random.default_rng(seed)
    r = 150 + rng.integers(0, 100, (height, width))
    g = rng.integers(0, 80, (height, width))
    b = 60 + rng.integers(0, 60, (height, width))
    return np.stack([r, g, b], -1).astype(np.uint8)


def _down(arr: np.ndarray, factor: int) -> np.ndarray:
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    blocks = arr[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).astype(np.float64)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _pyramid_slide(level0: np.ndarray, factors: tuple[int, ...] = (4, 16), **kwargs: object) -> MemorySlide:
    return MemorySlide([level0] + [_down(level0, f) for f in factors], **kwargs)  # type: ignore[arg-type]


def _rois(*rows: tuple[float, float, float]) -> torch.Tensor:
    return torch.stack([roi_matrix(cx, cy, h) for cx, cy, h in rows])


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return np.rint(images.permute(0, 2, 3, 1).numpy() * 255).astype(np.int16)


def test_equals_read_region_plus_resize_on_the_chosen_level() -> None:
    level0 = _colour_noise(384, 512)
    slide = _pyramid_slide(level0)  # downsamples 1, 4, 16; canvas side L = 512
    # Level-0 box [64, 320) x [64, 320): 256 px for 32 output px -> downsample 8 -> level 1 (d = 4);
    # in level-1 pixels the box is [16, 80) x [16, 80), integer-aligned and away from the slide's edge.
    cx, cy, h = (64 + 128 - 256) / 256, (64 + 128 - 192) / 256, 0.5
    reader = RegionReader(slide, grey_filter=False, threads=1)
    (plan,) = reader.plan(_rois((cx, cy, h)), 32)
    assert plan.level == 1 and plan.box == (16.0, 16.0, 80.0, 80.0)
    got = _to_uint8(reader.read(_rois((cx, cy, h)), 32))[0]

    # Same level, same Pillow filter, on the whole level (so the kernel sees the same neighbours).
    level1 = slide.read_region((0, 0), 1, slide.level_dimensions[1])
    whole = np.asarray(
        Image.fromarray(level1).resize((32, 32), Image.Resampling.BILINEAR, box=(16, 16, 80, 80))
    )
    assert np.array_equal(got, whole)

    # A plain read_region of the box + torch's antialiased bilinear resize agrees away from the border
    # (torch clips its kernel at the crop's edge; the reader reads a margin instead).
    crop = slide.read_region((64, 64), 1, (64, 64))
    tensor = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    ref = F.interpolate(tensor, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    ref_u8 = ref[0].permute(1, 2, 0).numpy()
    assert np.abs(got[2:-2, 2:-2] - ref_u8[2:-2, 2:-2]).max() <= 1.0


def _ramp_slide(width: int = 640, height: int = 480) -> MemorySlide:
    """R = 20 + 0.3 X, G = 20 + 0.4 Y at level-0 pixel centres; the area pyramid keeps it a ramp."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    level0 = np.stack([20 + 0.3 * xs, 20 + 0.4 * ys, np.full_like(xs, 200.0)], -1)
    return _pyramid_slide(np.rint(level0).astype(np.uint8), factors=(2, 4))


@pytest.mark.parametrize("dihedral", range(8))
def test_sub_pixel_accuracy_on_a_ramp_with_every_dihedral_map(dihedral: int) -> None:
    """Any fractional ROI, on any level, upsampled or not, returns the ramp at the output pixel centres:
    out(g) = ramp(canvas_to_level0(c + h D g)), the direct formula of magnet.geometry."""
    slide = _ramp_slide()
    w0, h0 = slide.dimensions
    side = max(w0, h0)
    reader = RegionReader(slide, grey_filter=False, threads=1)
    gen = torch.Generator().manual_seed(dihedral)
    d = dihedral_matrix(dihedral, torch.float64)
    for size in (16, 40):
        centres = (torch.rand(6, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.8
        halves = torch.tensor([0.01, 0.03, 0.07, 0.1, 0.15, 0.2], dtype=torch.float64)
        rois = torch.stack(
            [
                roi_matrix(float(c[0]), float(c[1]), float(h), torch.float64) @ d
                for c, h in zip(centres, halves, strict=True)
            ]
        )
        levels = {p.level for p in reader.plan(rois, size)}
        assert len(levels) >= 2  # the ROIs exercise several levels (and upsampling at level 0)
        got = reader.read(rois, size).numpy() * 255
        g = (2 * torch.arange(size, dtype=torch.float64) + 1) / size - 1
        gy, gx = torch.meshgrid(g, g, indexing="ij")
        grid = torch.stack([gx, gy], -1)  # (S, S, 2) output coords
        for n in range(len(rois)):
            u = rois[n, :2, 2] + grid @ rois[n, :2, :2].T  # canvas coords of every output pixel centre
            x = w0 / 2 + u[..., 0] * side / 2
            y = h0 / 2 + u[..., 1] * side / 2
            assert np.abs(got[n, 0] - (20 + 0.3 * x).numpy()).max() < 1.1
            assert np.abs(got[n, 1] - (20 + 0.4 * y).numpy()).max() < 1.1


def test_nested_rois_equal_direct_reads() -> None:
    slide = _pyramid_slide(_colour_noise(600, 800, seed=1))
    reader = RegionReader(slide, threads=1)
    parent = roi_matrix(0.1, -0.2, 0.4)
    theta1 = torch.tensor([0.5, 0.3, -0.4])
    theta2 = torch.tensor([0.3, -0.6, 0.2])
    child = compose(parent, theta1)
    grandchild = compose(child, theta2)
    # Direct: centre c + h t, half-size h s (docs/method.md §1).
    c1 = (0.1 + 0.4 * 0.3, -0.2 + 0.4 * -0.4, 0.4 * 0.5)
    c2 = (c1[0] + c1[2] * -0.6, c1[1] + c1[2] * 0.2, c1[2] * 0.3)
    nested = reader.read(torch.stack([child, grandchild]), 48)
    direct = reader.read(_rois(c1, c2), 48)
    assert (nested - direct).abs().max() <= 1.5 / 255


def test_child_read_is_the_matching_crop_of_the_parent_read() -> None:
    """Same level and scale, grids aligned: the child's pixels are exactly the parent's (sub-pixel box)."""
    slide = MemorySlide(_colour_noise(512, 512, seed=2), pyramid=False)
    reader = RegionReader(slide, grey_filter=False, threads=1)
    parent = roi_matrix(0.013, -0.021, 0.3125)  # 160 level-0 px -> 64 output px: scale 2.5, fractional box
    child = compose(parent, torch.tensor([0.5, 0.25, -0.25]))
    big = reader.read(parent[None], 64)[0]
    small = reader.read(child[None], 32)[0]
    # Child pixel j lies on parent pixel i = j + 32 (t + 1/2): columns 24..55, rows 8..39.
    assert (small - big[:, 8:40, 24:56]).abs().max() <= 1.0 / 255


def test_level_choice() -> None:
    slide = _pyramid_slide(_colour_noise(768, 1024))  # downsamples 1, 4, 16; L = 1024
    reader = RegionReader(slide)

    def level(box_side0: float, size: int) -> int:
        return reader.plan(_rois((0.0, 0.0, box_side0 / 1024)), size)[0].level

    assert level(32 * 4, 32) == 1  # exactly level 1's resolution
    assert level(32 * 3.9, 32) == 0  # a bit finer: level 0
    assert level(32 * 15.9, 32) == 1
    assert level(32 * 20, 32) == 2
    assert level(1024 * 2, 32) == 2  # zoomed out beyond the coarsest level: the coarsest
    assert level(16, 32) == 0  # finer than level 0: level 0, upsampled
    assert reader.plan(_rois((0.0, 0.0, 1.0)), 64)[0].level == 2


def test_out_of_slide_is_black_and_not_read() -> None:
    slide = MemorySlide(_colour_noise(256, 256), pyramid=False)
    reader = RegionReader(slide, grey_filter=False, threads=1)
    out = reader.read(_rois((1.0, 0.0, 0.25), (3.0, 3.0, 0.25)), 32)
    half_outside, outside = out[0], out[1]
    assert half_outside[:, :, 17:].abs().max() == 0  # right of the slide edge (column 16)
    assert (half_outside[:, :, :15].amax(0) > 0).all()  # tissue everywhere left of it
    assert outside.abs().max() == 0
    assert reader.regions_read == 1  # the fully outside ROI decoded nothing


@pytest.mark.parametrize(("width", "height"), [(400, 200), (200, 400)])
def test_non_square_slides_are_centred_on_the_canvas(width: int, height: int) -> None:
    slide = MemorySlide(_colour_noise(height, width), pyramid=False)
    root = RegionReader(slide, grey_filter=False).read(torch.eye(3)[None], 64)[0].amax(0)
    if width < height:
        root = root.T  # black bands left/right instead of top/bottom
    assert root[:15].max() == 0 and root[49:].max() == 0  # canvas outside the slide
    assert (root[17:47] > 0).all()  # the slide fills the middle half


def test_grey_filter_switch_and_threshold() -> None:
    arr = _colour_noise(128, 128)
    arr[:, :64] = (200, 200, 205)  # glass: spread 5 < 15
    slide = MemorySlide(arr, pyramid=False)
    rois = torch.eye(3)[None]
    on = RegionReader(slide, grey_filter=True).read(rois, 32)[0]
    off = RegionReader(slide, grey_filter=False).read(rois, 32)[0]
    loose = RegionReader(slide, grey_filter=True, grey_threshold=3).read(rois, 32)[0]
    assert on[:, :, :15].max() == 0 and (on[:, :, 17:].amax(0) > 0).all()
    # (the outermost pixels blend with the black canvas beyond the slide's edge)
    assert torch.allclose(off[:, 1:-1, 1:15], torch.tensor([200.0, 200.0, 205.0])[:, None, None] / 255)
    assert torch.equal(loose, off)


@pytest.mark.parametrize("index", range(8))
def test_each_dihedral_map_and_its_inverse(index: int) -> None:
    slide = MemorySlide(_colour_noise(300, 300, seed=index), pyramid=False)
    reader = RegionReader(slide, grey_filter=False, threads=1)
    base = roi_matrix(0.1, -0.05, 0.3)
    d = dihedral_matrix(index)
    plain = reader.read(base[None], 24)
    mapped = reader.read((base @ d)[None], 24)
    # Direct formula out[g] = plain[D g], by nearest-neighbour grid_sample (pixel centres map to centres).
    grid = F.affine_grid(d[:2][None], [1, 3, 24, 24], align_corners=False)
    expected = F.grid_sample(plain, grid, mode="nearest", align_corners=False)
    assert torch.equal(mapped, expected)
    inverse = tuple(int(v) for v in torch.linalg.inv(d)[:2, :2].round().int().flatten())
    undone = apply_dihedral(mapped[0].permute(1, 2, 0).numpy(), inverse)  # type: ignore[arg-type]
    assert np.array_equal(undone, plain[0].permute(1, 2, 0).numpy())
    assert DIHEDRAL_FLAT[index] == tuple(int(v) for v in d[:2, :2].flatten())


def test_flip_x_mirrors_left_right() -> None:
    slide = MemorySlide(_colour_noise(200, 300), pyramid=False)
    reader = RegionReader(slide, grey_filter=False)
    out = reader.read(torch.stack([torch.eye(3), dihedral_matrix(4)]), 32)  # 4 = mirror left-right
    assert torch.equal(out[1], out[0].flip(-1))


def test_counters_and_reset() -> None:
    slide = MemorySlide(_colour_noise(256, 256), pyramid=False)
    reader = RegionReader(slide, threads=1)
    rois = _rois((0.0, 0.0, 0.25), (-1.0, -1.0, 0.25))  # inside; a quarter inside (top-left corner)
    plans = reader.plan(rois, 16)
    reader.read(rois, 16)
    inside = plans[0].region[2] * plans[0].region[3]
    corner = plans[1].region
    clipped = (corner[0] + corner[2]) * (corner[1] + corner[3])  # the part with x, y >= 0
    assert reader.regions_read == 2
    assert reader.pixels_decoded == inside + clipped
    reader.reset_counters()
    assert (reader.regions_read, reader.pixels_decoded) == (0, 0)


def test_one_thread_and_pool_agree() -> None:
    slide = _pyramid_slide(_colour_noise(512, 700, seed=3))
    gen = torch.Generator().manual_seed(0)
    n = 24
    halves = 10 ** (torch.rand(n, generator=gen) * 2 - 2)  # 0.01 .. 1
    centres = torch.rand(n, 2, generator=gen) * 2 - 1
    ds = torch.stack([dihedral_matrix(int(k)) for k in torch.randint(0, 8, (n,), generator=gen)])
    rois = torch.stack(
        [roi_matrix(float(c[0]), float(c[1]), float(h)) for c, h in zip(centres, halves, strict=True)]
    )
    rois = rois @ ds
    serial = RegionReader(slide, threads=1)
    with RegionReader(slide, threads=2) as pooled:
        a, b = serial.read(rois, 28), pooled.read(rois, 28)
        assert torch.equal(a, b)
        assert pooled.pixels_decoded == serial.pixels_decoded and pooled.regions_read == serial.regions_read


def test_rgba_grey_and_16_bit_slides() -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = _colour_noise(64, 64)
    rgba[:, 32:, 3] = 255  # left half transparent -> black
    grey16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    grey8 = np.full((64, 64), 99, np.uint8)
    for arr in (rgba, grey16, grey8):
        out = RegionReader(MemorySlide(arr), grey_filter=False).read(torch.eye(3)[None], 16)
        assert out.shape == (1, 3, 16, 16) and out.dtype == torch.float32
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    out = RegionReader(MemorySlide(rgba), grey_filter=False).read(torch.eye(3)[None], 16)[0]
    assert out[:, :, :7].max() == 0 and (out[0, :, 9:] > 0).all()
    grey = RegionReader(MemorySlide(grey8), grey_filter=False).read(torch.eye(3)[None], 8)[0]
    assert torch.allclose(grey[:, 1:-1, 1:-1], torch.full((3, 6, 6), 99 / 255))  # edges blend with the canvas
    assert RegionReader(MemorySlide(grey8)).read(torch.eye(3)[None], 8).max() == 0  # grey is filtered


def test_empty_batch() -> None:
    out = RegionReader(MemorySlide(_colour_noise(32, 32))).read(torch.zeros(0, 3, 3), 12)
    assert out.shape == (0, 3, 12, 12)


@pytest.mark.parametrize(
    ("roi", "size", "message"),
    [
        (roi_matrix(0.0, 0.0, 0.0), 16, "non-positive size"),
        (torch.tensor([[0.3, 0.0, 0], [0.0, 0.2, 0], [0, 0, 1]]), 16, "not a square"),
        (torch.tensor([[0.3, -0.3, 0], [0.3, 0.3, 0], [0, 0, 1]]), 16, "flip/90-degree"),
        (torch.tensor([[0.3, 0.0, 0], [0.0, 0.3, 0], [0.1, 0, 1]]), 16, "last row"),
        (roi_matrix(0.0, 0.0, 0.5), 0, "output size"),
    ],
)
def test_bad_rois_are_one_line_errors_naming_the_slide(roi: torch.Tensor, size: int, message: str) -> None:
    reader = RegionReader(MemorySlide(_colour_noise(32, 32), path="tiny.svs"))
    with pytest.raises(SlideError, match=message) as info:
        reader.read(roi[None], size)
    assert str(info.value).startswith("tiny.svs: ") and "\n" not in str(info.value)


def test_a_nan_roi_is_the_models_fault_not_the_slides() -> None:
    """A NaN ROI comes from the model: a ``NonFiniteError``, which training never skips as a bad slide."""
    from magnet.errors import NonFiniteError

    reader = RegionReader(MemorySlide(_colour_noise(32, 32), path="tiny.svs"))
    roi = torch.tensor([[float("nan"), 0, 0], [0, 0.5, 0], [0, 0, 1]])
    with pytest.raises(NonFiniteError, match=r"^tiny.svs: ROI 0 has non-finite values") as info:
        reader.read(roi[None], 16)
    assert not isinstance(info.value, SlideError)


def test_bad_shape_and_huge_reads() -> None:
    reader = RegionReader(
        MemorySlide(_colour_noise(64, 64), path="s.tif", pyramid=False), max_region_pixels=500
    )
    with pytest.raises(SlideError, match=r"shape \(N, 3, 3\)"):
        reader.read(torch.zeros(2, 2, 3), 8)
    with pytest.raises(SlideError, match="no coarser level"):
        reader.read(torch.eye(3)[None], 8)


class _OpenSlideTiff(Slide):
    """Just enough of an OpenSlide-backed Slide for this test (the real backend lives elsewhere)."""

    backend = "openslide-test"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._osr = openslide.OpenSlide(path)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._osr.level_dimensions)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        rgba = np.asarray(self._osr.read_region(location, level, size))
        return (rgba[..., :3].astype(np.uint16) * rgba[..., 3:] // 255).astype(np.uint8)

    def close(self) -> None:
        self._osr.close()


def test_reads_through_openslide_of_a_written_tiff_are_on_the_ramp(tmp_path: Path) -> None:
    """The OpenSlide path (level-0 ``location``, level ``size``) lands where the reader thinks: reads of a
    ramp TIFF match the analytic ramp to within JPEG error (a 2-level-0-pixel offset would fail)."""
    width, height = 512, 384
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    ramp = np.stack([10 + 0.4 * xs, 10 + 0.5 * ys, np.full_like(xs, 200.0)], -1)
    memory = _pyramid_slide(np.rint(ramp).astype(np.uint8), factors=(2, 4))
    write_pyramidal_tiff(memory, tmp_path / "ramp.tif", tile_size=128, quality=95)
    gen = torch.Generator().manual_seed(5)
    params = torch.rand(12, 3, generator=gen) * torch.tensor([1.2, 0.8, 0.25]) - torch.tensor(
        [0.6, 0.4, -0.03]
    )
    rois = _rois(*[(float(cx), float(cy), float(h)) for cx, cy, h in params])
    with _OpenSlideTiff(str(tmp_path / "ramp.tif")) as tiff:
        reader = RegionReader(tiff, grey_filter=False)
        assert {p.level for p in reader.plan(rois, 16)} == {0, 2}
        got = reader.read(rois, 16).double() * 255
    g = (2 * torch.arange(16, dtype=torch.float64) + 1) / 16 - 1
    x = width / 2 + (params[:, 0, None].double() + params[:, 2, None].double() * g) * width / 2
    y = height / 2 + (params[:, 1, None].double() + params[:, 2, None].double() * g) * width / 2
    assert (got[:, 0] - (10 + 0.4 * x)[:, None, :]).abs().mean() < 0.8
    assert (got[:, 1] - (10 + 0.5 * y)[:, :, None]).abs().mean() < 0.8


def test_fast_grey_filter_equals_the_reference() -> None:
    """The reader's in-place filter on (3, H, W), the (H, W, 3) copy and the torch filter agree with the
    definition max - min < threshold -> black."""
    from magnet.slides.pixels import blacken_grey, grey_filter, grey_filter_tensor, grey_mask

    rgb = np.random.default_rng(4).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    rgb[::3] = rgb[::3, :, :1]  # plenty of exactly grey pixels too
    for threshold in (1, 15, 40):
        grey = rgb.max(axis=2).astype(int) - rgb.min(axis=2).astype(int) < threshold
        reference = np.where(grey[..., None], 0, rgb).astype(np.uint8)
        assert np.array_equal(grey_mask(rgb, threshold), grey)
        fast = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        blacken_grey(fast, threshold, channel_axis=0)
        assert np.array_equal(fast.transpose(1, 2, 0), reference)
        assert np.array_equal(grey_filter(rgb, threshold), reference)
        floats = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255  # what the reader returns
        filtered = grey_filter_tensor(floats, threshold - 0.5)  # half a level: float32 rounding of k / 255
        assert torch.equal(filtered, torch.from_numpy(reference).permute(2, 0, 1).float() / 255)


def test_apply_dihedral_rejects_other_matrices() -> None:
    with pytest.raises(ValueError, match="not one of the 8"):
        apply_dihedral(np.zeros((4, 4, 3)), (1, 1, 0, 1))


def test_opaque_rgba_is_its_rgb_and_partly_transparent_rgba_is_composited() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    opaque = to_rgb_uint8(rgba)
    assert opaque.flags.c_contiguous and np.array_equal(opaque, rgba[..., :3])
    rgba[5, 7, 3] = 128  # one pixel half transparent: the whole image goes through the composite
    rgba[0, 0, 3] = 0
    mixed = to_rgb_uint8(rgba)
    expected = (rgba[..., :3].astype(np.uint16) * rgba[..., 3:] + 127) // 255
    assert np.array_equal(mixed, expected) and not mixed[0, 0].any()
