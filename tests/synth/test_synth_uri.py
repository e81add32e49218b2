"""URI parsing of virtual slides: canonical form, defaults, strict one-line errors."""

from __future__ import annotations

import pytest

import magnet.synth  # noqa: F401 - registers the synth: scheme
from magnet.errors import SlideError
from magnet.slides.registry import open_slide
from magnet.synth import VirtualSlide, parse_uri
from magnet.synth.uri import lesion_for_seed


def test_defaults_and_canonical_form() -> None:
    spec = parse_uri("synth:lesion=micro,seed=17")
    assert spec.size == (100_000, 100_000) and spec.mpp == 0.25 and spec.texture == "procedural"
    assert spec.uri == "synth:seed=17,size=100000x100000,lesion=micro"
    assert parse_uri(spec.uri) == spec
    odd = parse_uri("synth:seed=3,size=9000x5000,lesion=itc,mpp=0.5")
    assert odd.uri == "synth:seed=3,size=9000x5000,lesion=itc,mpp=0.5"


def test_missing_lesion_is_drawn_from_the_seed() -> None:
    classes = {parse_uri(f"synth:seed={s}").lesion for s in range(60)}
    assert classes <= {"negative", "macro", "micro", "itc"} and "negative" in classes and len(classes) > 1
    assert parse_uri("synth:seed=5").lesion == lesion_for_seed(5)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("synth:", "empty"),
        ("synth:size=9000x9000", "missing key 'seed'"),
        ("synth:seed=1,colour=red", "unknown key 'colour'"),
        ("synth:seed=1,seed=2", "given twice"),
        ("synth:seed=-4", "non-negative integer"),
        ("synth:seed=1,size=9000", "WIDTHxHEIGHT"),
        ("synth:seed=1,size=10x10", "sides must be in"),
        ("synth:seed=1,lesion=huge", "lesion must be one of"),
        ("synth:seed=1,mpp=abc", "mpp must be a number"),
        ("synth:seed=1,mpp=50", "mpp must be in"),
        ("synth:seed=1,texture=paint", "texture must be one of"),
        ("synth:seed=1,texture_dir=/tmp", "only meaningful with texture=camelyon16"),
        ("synth:seed=1,,lesion=itc", "malformed item"),
    ],
)
def test_bad_uris_give_one_line_slide_errors(uri: str, needle: str) -> None:
    with pytest.raises(SlideError) as info:
        open_slide(uri)
    message = str(info.value)
    assert needle in message and "\n" not in message and message.startswith(uri)


def test_open_slide_gives_a_virtual_slide() -> None:
    slide = open_slide("synth:seed=4,size=8192x6000,lesion=itc")
    assert isinstance(slide, VirtualSlide) and slide.backend == "synth"
    assert slide.path == "synth:seed=4,size=8192x6000,lesion=itc"
    assert slide.dimensions == (8192, 6000) and slide.mpp == (0.25, 0.25)
    assert slide.level_downsamples == (1.0, 4.0, 16.0)
    assert slide.level_dimensions == ((8192, 6000), (2048, 1500), (512, 375))


def test_a_lesion_too_large_for_the_slide_is_a_clear_error() -> None:
    with pytest.raises(SlideError, match="lesion=macro needs >= 2.3 mm"):
        VirtualSlide("synth:seed=1,size=8192x8192,lesion=macro")
