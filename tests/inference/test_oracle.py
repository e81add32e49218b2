"""Oracle zoom (a zoom control, ``model.zoom="oracle"``, docs/method.md §8): final ROIs on lesions / tissue,
dihedral maps, the MagNet's oracle branch, and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolygonPath

from magnet.errors import ConfigError
from magnet.geometry import NUM_DIHEDRAL, compose, dihedral_matrix, roi_to_level0_box
from magnet.inference.oracle import OracleZoom, outline_tour, polygon_points, tissue_map
from magnet.metrics.localisation import slide_localisation
from magnet.models import build_model, model_config
from magnet.models.magnet import MagNet
from magnet.slides.reader import DIHEDRAL_FLAT, RegionReader, apply_dihedral
from magnet.slides.registry import open_slide
from magnet.slides.tensor_source import TensorRegionSource
from magnet.synth.dataset import make_dataset

SIZE = (32768, 32768)
SIZES = dict(view_size=24, read_size=48, final_size=32, final_read_size=64, classifier_input_size=32)


@pytest.fixture(scope="module")
def slides():  # type: ignore[no-untyped-def]
    """A few virtual slides with their outlines: one positive of each class, two negatives."""
    data = make_dataset(12, 5, size=SIZE)
    chosen = [next(s for s in data if s.lesion_class == c) for c in ("macro", "micro", "itc")]
    chosen += [s for s in data if s.label == 0][:2]
    return chosen


def outlines_of(slides) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    return {s.uri: [np.asarray(les["polygon"], float) for les in s.lesions] for s in slides}


def reader(uri: str) -> RegionReader:
    return RegionReader(open_slide(uri), threads=1)


def test_positive_boxes_lie_on_lesions_with_the_requested_side(slides) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    oracle = OracleZoom(outlines_of(slides), side=0.125)
    for slide in (s for s in slides if s.label == 1):
        source = reader(slide.uri)
        rois = oracle.rois([slide.uri], [source], 16, generator=torch.Generator().manual_seed(0))
        assert rois.shape == (1, 16, 3, 3) and rois.dtype == torch.float64
        boxes = roi_to_level0_box(rois[0], source.slide_size).numpy()
        sides = boxes[:, 2:] - boxes[:, :2]
        assert np.allclose(sides, 0.125 * max(SIZE))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        paths = [PolygonPath(p) for p in oracle.outlines[slide.uri]]
        assert all(any(p.contains_point(c) for p in paths) for c in centres), slide.lesion_class
        # Every oracle patch counts for a hit (side exactly the 1/8 threshold) and lands on the lesion.
        loc = slide_localisation(boxes, source.slide_size, oracle.outlines[slide.uri])
        assert loc.hit and loc.eligible_share == 1.0 and loc.lesion_share > 0
        assert len({tuple(c) for c in centres.round(3)}) > 1  # random points, not one


def test_lesion_points_are_uniform_over_the_lesion_area() -> None:
    # Two squares, areas 1 : 9: about a tenth of the points in the small one.
    small = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    large = small * 3 + 100
    points = polygon_points([small, large], 2000, torch.Generator().manual_seed(1))
    in_small = PolygonPath(small).contains_points(points)
    in_large = PolygonPath(large).contains_points(points)
    assert bool((in_small | in_large).all())
    assert in_small.mean() == pytest.approx(0.1, abs=0.03)


def test_lesion_points_by_outline_give_each_outline_the_same_share() -> None:
    # A square and a triangle filling half of a box nine times the square's: equal odds per outline, though
    # the triangle's area is 4.5 times the square's and it keeps only half of the candidates in its box.
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    triangle = np.array([[100, 100], [130, 100], [100, 130]], float)
    points = polygon_points([square, triangle], 4000, torch.Generator().manual_seed(1), by_area=False)
    in_square = PolygonPath(square).contains_points(points)
    in_triangle = PolygonPath(triangle).contains_points(points)
    assert bool((in_square | in_triangle).all())
    assert in_square.mean() == pytest.approx(0.5, abs=0.04)


def test_an_outline_tour_visits_every_outline_before_any_twice() -> None:
    squares = [np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float) + 100 * k for k in range(5)]
    points = outline_tour(squares, 12, torch.Generator().manual_seed(2))
    which = np.full(len(points), -1)
    for k, square in enumerate(squares):
        which[PolygonPath(square).contains_points(points)] = k
    assert sorted(which[:5]) == sorted(which[5:10]) == list(range(5))  # two full rounds, then two more
    assert len(set(which[10:])) == 2 and -1 not in which
    # The order is drawn, not the list's: different generators give different orders.
    tours = [outline_tour(squares, 5, torch.Generator().manual_seed(seed)) for seed in range(8)]
    orders = {tuple(points[:, 0] // 100) for points in tours}
    assert len(orders) > 1


def lookalikes_of(slides) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    return {s.uri: [np.asarray(item["polygon"], float) for item in s.lookalikes] for s in slides}


def test_negative_boxes_lie_on_lookalikes_when_given(slides) -> None:  # type: ignore[no-untyped-def]
    oracle = OracleZoom(outlines_of(slides), side=0.125, lookalikes=lookalikes_of(slides))
    for slide in slides:
        source = reader(slide.uri)
        rois = oracle.rois([slide.uri], [source], 64, generator=torch.Generator().manual_seed(6))
        boxes = roi_to_level0_box(rois[0], source.slide_size).numpy()
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        # Positives keep their lesions; negatives read their look-alikes, many of them, not one.
        polygons = oracle.outlines[slide.uri] if slide.label else oracle.lookalikes[slide.uri]
        inside = np.zeros(len(centres), dtype=int)
        for k, polygon in enumerate(polygons):
            inside[PolygonPath(polygon).contains_points(centres)] = k + 1
        assert bool((inside > 0).all()), slide.lesion_class
        if not slide.label:  # every look-alike read, the small ones too (equal odds: ~9 of 64 each)
            assert len(polygons) >= 3 and set(inside) == set(range(1, len(polygons) + 1))


def test_candidate_boxes_tour_lesions_and_lookalikes_alike(slides) -> None:  # type: ignore[no-untyped-def]
    oracle = OracleZoom(outlines_of(slides), side=0.125, lookalikes=lookalikes_of(slides), candidates=True)
    for slide in slides:
        source = reader(slide.uri)
        spots = [*oracle.outlines[slide.uri], *oracle.lookalikes[slide.uri]]
        count = len(spots)  # one round: every lesion-like spot once
        rois = oracle.rois([slide.uri], [source], count, generator=torch.Generator().manual_seed(4))
        boxes = roi_to_level0_box(rois[0], source.slide_size).numpy()
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        visited = [bool(PolygonPath(p).contains_points(centres).any()) for p in spots]
        assert all(visited), slide.lesion_class
        if slide.label:  # the lesion is one spot among many: read, but not by every patch
            on_lesion = np.zeros(len(centres), dtype=bool)
            for polygon in oracle.outlines[slide.uri]:
                on_lesion |= PolygonPath(polygon).contains_points(centres)
            assert 0 < on_lesion.sum() < len(centres)
    with pytest.raises(ValueError, match="pass lookalikes"):
        OracleZoom(outlines_of(slides), side=0.125, candidates=True)
    with pytest.raises(ConfigError, match="set oracle_negatives=lookalikes"):
        model_config("tiny", zoom="oracle", oracle_positives="candidates")


def test_negative_centres_lie_on_tissue() -> None:
    # A non-square slide (so the canvas has padding) whose only tissue is a rectangle aligned to map cells.
    image = torch.zeros(3, 96, 128)
    image[0, 16:48, 32:96], image[1, 16:48, 32:96], image[2, 16:48, 32:96] = 0.8, 0.4, 0.6
    image[:, 60:, :] = 0.9  # white glass: not tissue (grey), though not black
    source = TensorRegionSource(image)
    oracle = OracleZoom({}, side=0.1, tissue_grid=32)  # map cells of 4 x 4 px
    rois = oracle.rois(["neg"], [source], 64, generator=torch.Generator().manual_seed(2))
    boxes = roi_to_level0_box(rois[0], source.slide_size)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2).numpy()
    # The map's antialiased read blurs the rectangle's rim into the next cell: one cell (4 px) of slack.
    assert bool(((centres[:, 0] >= 28) & (centres[:, 0] <= 100)).all())
    assert bool(((centres[:, 1] >= 12) & (centres[:, 1] <= 52)).all())
    assert centres[:, 0].std() > 10 and centres[:, 1].std() > 5  # spread over the rectangle
    assert 8 * 16 <= oracle.tissue("neg", source).rows.size <= 10 * 18  # cached map: 8 x 16 cells, + rim


def test_negative_centres_on_virtual_tissue(slides) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    negative = next(s for s in slides if s.label == 0)
    source = reader(negative.uri)
    oracle = OracleZoom(outlines_of(slides), side=0.125)
    rois = oracle.rois([negative.uri], [source], 32, generator=torch.Generator().manual_seed(3))
    # A tiny view at each centre (1/1024 of the slide) is tissue: the grey filter keeps most of its pixels.
    tiny = rois[0].clone()
    tiny[:, :2, :2] /= 128
    views = source.read(tiny, 4)
    kept = (views.amax(1) > 0).float().mean(dim=(1, 2))
    assert (kept > 0.5).float().mean() >= 0.9
    assert tissue_map(source).rows.size > 0


def test_dihedral_reads_equal_flipped_plain_reads(slides) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    oracle = OracleZoom(outlines_of(slides), side=0.125)
    slide = next(s for s in slides if s.lesion_class == "macro")
    source = reader(slide.uri)
    plain_rois = oracle.rois([slide.uri], [source], 4, generator=torch.Generator().manual_seed(4))
    plain = source.read(plain_rois[0], 24)
    for index in range(1, NUM_DIHEDRAL):
        root = dihedral_matrix(index, torch.float64).unsqueeze(0)
        rois = oracle.rois([slide.uri], [source], 4, root, generator=torch.Generator().manual_seed(4))
        # Same boxes on the slide, linear part h * D as every ROI of an augmented step.
        assert torch.allclose(roi_to_level0_box(rois[0], SIZE), roi_to_level0_box(plain_rois[0], SIZE))
        assert torch.allclose(rois[0, :, :2, :2], 0.125 * root[0, :2, :2].expand(4, 2, 2))
        flipped = source.read(rois[0], 24)
        for got, want in zip(flipped, plain, strict=True):
            expected = apply_dihedral(want.permute(1, 2, 0).numpy(), DIHEDRAL_FLAT[index])
            assert np.array_equal(got.permute(1, 2, 0).numpy(), expected), index


def test_without_a_generator_each_slide_gets_the_same_rois_in_any_batch(slides) -> None:  # type: ignore[no-untyped-def]
    oracle = OracleZoom(outlines_of(slides), side=0.125)
    a, b = slides[0].uri, slides[3].uri
    sa, sb = reader(a), reader(b)
    together = oracle.rois([a, b], [sa, sb], 4)
    assert torch.equal(oracle.rois([b], [sb], 4)[0], together[1])
    assert torch.equal(oracle.rois([a], [sa], 4)[0], together[0])


def oracle_model(**overrides: object) -> MagNet:
    torch.manual_seed(0)
    config = model_config("tiny", zoom="oracle", **{**SIZES, **overrides})  # type: ignore[arg-type]
    return build_model(config).eval()


def test_forward_in_oracle_mode_uses_the_given_final_rois() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(5)
    sources = [TensorRegionSource(torch.rand(3, 160, 192, generator=g)) for _ in range(2)]
    model = oracle_model()
    count = model.config.patches_at(model.config.num_layers)
    points = [torch.rand(count, 2, generator=g, dtype=torch.float64).numpy() * [192, 160] for _ in sources]
    root = torch.stack([dihedral_matrix(0, torch.float64), dihedral_matrix(5, torch.float64)])
    from magnet.inference.oracle import oracle_rois

    final = torch.stack([oracle_rois(p, s.slide_size, 0.2, root[b, :2, :2])
                         for b, (p, s) in enumerate(zip(points, sources, strict=True))])
    with torch.no_grad():
        out = model(sources, root, final_rois=final)
    assert torch.equal(out.rois[-1], final)
    for b, source in enumerate(sources):
        assert torch.allclose(out.boxes_level0[-1][b], roi_to_level0_box(final[b], source.slide_size))
        assert torch.equal(out.patches[-1][b], source.read(final[b], model.config.final_size))
    # theta of the last layer: the ROI relative to its nominal parent, as in every other layer.
    parents = out.rois[-2].repeat_interleave(model.config.patches_per_layer[-1], dim=1)
    assert torch.allclose(compose(parents, out.thetas[-1].double()), final, atol=1e-6)
    assert out.patches[-1].shape[:2] == (2, count) and out.logit.shape == (2,)
    # Layers 1..L-1 are the fixed control.
    fixed = build_model(model_config("tiny", zoom="fixed", **SIZES)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        reference = fixed(sources, root)
    for layer in range(model.config.num_layers - 1):
        assert torch.allclose(out.rois[layer], reference.rois[layer])


def test_forward_refuses_missing_or_misplaced_final_rois() -> None:
    sources = [TensorRegionSource(torch.rand(3, 64, 64))]
    model = oracle_model()
    with pytest.raises(ValueError, match="final_rois"):
        model(sources)
    with pytest.raises(ValueError, match="must have shape"):
        model(sources, final_rois=torch.eye(3, dtype=torch.float64).expand(1, 3, 3, 3))
    learned = build_model(model_config("tiny", **SIZES))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only for model.zoom='oracle'"):
        learned(sources, final_rois=torch.eye(3).expand(1, 8, 3, 3))


def test_oracle_side_is_validated() -> None:
    assert model_config("tiny", zoom="oracle").oracle_side == 0.125
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="oracle_side"):
            model_config("tiny", oracle_side=bad)


def test_oracle_needs_outlines_of_every_positive(slides) -> None:  # type: ignore[no-untyped-def]
    from magnet.data.manifest import ManifestRow

    rows = [ManifestRow(s.uri, s.label, s.lesion_class, "train") for s in slides]
    with pytest.raises(ConfigError, match=r"^m\.csv: model\.zoom=oracle .* names none"):
        OracleZoom.for_rows(None, rows, 0.125, "m.csv")
    partial = outlines_of(slides)
    del partial[slides[1].uri]
    with pytest.raises(ConfigError, match="1 have none") as info:
        OracleZoom.for_rows(partial, rows, 0.125, "m.csv")
    assert "\n" not in str(info.value)
    assert OracleZoom.for_rows(outlines_of(slides), rows, 0.125, "m.csv").side == 0.125


def test_for_manifest_reads_the_lookalikes_the_config_asks_for(slides, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from magnet.data.manifest import read_manifest, write_manifest
    from magnet.synth.dataset import write_dataset

    manifest = write_dataset(slides, tmp_path / "set")
    rows = read_manifest(manifest, check_slides=False).rows
    plain = OracleZoom.for_manifest(model_config("tiny", zoom="oracle"), rows, manifest.parent, "m.csv")
    assert plain.lookalikes == {} and set(plain.outlines) == {s.uri for s in slides}
    config = model_config("tiny", zoom="oracle", oracle_negatives="lookalikes")
    hard = OracleZoom.for_manifest(config, rows, manifest.parent, "m.csv")
    for slide in slides:
        assert [p.tolist() for p in hard.lookalikes[slide.uri]] == [i["polygon"] for i in slide.lookalikes]
    assert not hard.candidates
    blind = model_config("tiny", zoom="oracle", oracle_negatives="lookalikes", oracle_positives="candidates")
    assert OracleZoom.for_manifest(blind, rows, manifest.parent, "m.csv").candidates
    # A manifest without the column: one line naming the manifest and what to add.
    bare = [type(r)(r.slide, r.label, r.lesion_class, r.split, extra={"lesions": r.extra["lesions"]})
            for r in rows]
    write_manifest(bare, tmp_path / "set" / "bare.csv")
    bare_rows = read_manifest(tmp_path / "set" / "bare.csv", check_slides=False).rows
    message = r"^bare\.csv: model\.oracle_negatives=lookalikes .* 'lookalikes' column"
    with pytest.raises(ConfigError, match=message) as info:
        OracleZoom.for_manifest(config, bare_rows, manifest.parent, "bare.csv")
    assert "\n" not in str(info.value)
