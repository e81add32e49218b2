"""Every version of the generator renders byte-identically, release after release.

Every recorded benchmark and manifest names slides of one version (1, with no ``version`` in the URI, to 4),
so any drift in their pixels is a bug: a faster renderer must draw the same bytes. The digests are
of 96 x 64 regions at levels 0, 2 and 4 around the main lesion (or the main section's centre), for each
lesion class and both texture sources.

Byte identity holds on one kind of CPU, not across kinds: numpy's transcendental functions take other SIMD
paths on AVX-512 machines (numpy's X86_V4 / AVX512_ICL targets) than on AVX2 ones, and a last-bit difference
can round one 8-bit value the other way (measured: 1 of 18,432 values, by 1, on the negative slide). Where
the two paths differ, both digests are recorded (``X86_V4_DIGESTS``); the AVX2 path's can be computed on any
machine with ``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL"``.
"""

from __future__ import annotations

import hashlib

import pytest

import magnet.synth  # noqa: F401 - registers the synth: scheme
from magnet.synth import VirtualSlide

V1_DIGESTS = {
    ("synth:seed=1,lesion=macro", 0): "34e817d316b11e2b",
    ("synth:seed=1,lesion=macro", 2): "9f34d03b5900a5da",
    ("synth:seed=1,lesion=macro", 4): "573029832d95c7f8",
    ("synth:seed=2,lesion=micro", 0): "2cc4d8f1af331835",
    ("synth:seed=2,lesion=micro", 2): "77daf5c86113a1ae",
    ("synth:seed=2,lesion=micro", 4): "24927849de004f6f",
    ("synth:seed=5,lesion=itc", 0): "83140bcab97d6b8c",
    ("synth:seed=5,lesion=itc", 2): "259e5c6ee5ed6e00",
    ("synth:seed=5,lesion=itc", 4): "a4bb10283945f1b5",
    ("synth:seed=4,lesion=negative", 0): "ff4c1f99663d7466",
    ("synth:seed=4,lesion=negative", 2): "2a74c465a8fd0b3a",
    ("synth:seed=4,lesion=negative", 4): "6886f98930f1495f",
    ("synth:seed=1,lesion=macro,texture=camelyon16", 0): "72f6ac58c7ddedc7",
    ("synth:seed=1,lesion=macro,texture=camelyon16", 2): "eea90a3c7456a749",
    ("synth:seed=1,lesion=macro,texture=camelyon16", 4): "119073bd19791fe3",
    ("synth:seed=2,lesion=micro,texture=camelyon16", 0): "49bc4d74b27374ae",
    ("synth:seed=2,lesion=micro,texture=camelyon16", 2): "d3a366deb01995bc",
    ("synth:seed=2,lesion=micro,texture=camelyon16", 4): "9c993382afdc8347",
    ("synth:seed=5,lesion=itc,texture=camelyon16", 0): "af385dd725d18405",
    ("synth:seed=5,lesion=itc,texture=camelyon16", 2): "3a499520a27bfe2a",
    ("synth:seed=5,lesion=itc,texture=camelyon16", 4): "24a7ced222cd930e",
    ("synth:seed=4,lesion=negative,texture=camelyon16", 0): "57f94b8195861e93",
    ("synth:seed=4,lesion=negative,texture=camelyon16", 2): "acf9fd6f15ff2618",
    ("synth:seed=4,lesion=negative,texture=camelyon16", 4): "64840e51a15b32ce",
}


# The AVX-512 path's digest where it differs from the AVX2 path's above.
X86_V4_DIGESTS = {
    ("synth:seed=4,lesion=negative", 0): "9819aae4ff49c244",
    ("synth:seed=4,lesion=negative", 2): "83ea3664a344b2e9",
    ("synth:seed=4,lesion=negative,texture=camelyon16", 0): "6bf65f191dac43fb",
    ("synth:seed=4,lesion=negative,texture=camelyon16", 2): "6b38348b7673aff8",
}


# Versions 2-4 (recorded 2026-12-06, before the renderer was made faster), the same regions, and a micro slide
# with Camelyon16 textures per version.
LATER_DIGESTS = {
    ("synth:seed=1,lesion=macro,version=2", 0): "338a80b7e1d397e3",
    ("synth:seed=1,lesion=macro,version=2", 2): "105ba6b34305dbba",
    ("synth:seed=1,lesion=macro,version=2", 4): "82bc24684e6b9eaf",
    ("synth:seed=2,lesion=micro,version=2", 0): "531405323bce50b9",
    ("synth:seed=2,lesion=micro,version=2", 2): "45e075f8d3da1c9c",
    ("synth:seed=2,lesion=micro,version=2", 4): "1b9a4df326b44b14",
    ("synth:seed=5,lesion=itc,version=2", 0): "052f395f143212d7",
    ("synth:seed=5,lesion=itc,version=2", 2): "5ef708807971f7a7",
    ("synth:seed=5,lesion=itc,version=2", 4): "be52d5b0aa14a5fb",
    ("synth:seed=4,lesion=negative,version=2", 0): "822edec9b4f76846",
    ("synth:seed=4,lesion=negative,version=2", 2): "a0346d97fdb6f6d6",
    ("synth:seed=4,lesion=negative,version=2", 4): "2ee347239eb0ee1f",
    ("synth:seed=2,lesion=micro,version=2,texture=camelyon16", 0): "f56a85364fcda6d3",
    ("synth:seed=2,lesion=micro,version=2,texture=camelyon16", 2): "d6f0628e0760f979",
    ("synth:seed=2,lesion=micro,version=2,texture=camelyon16", 4): "3ffd172dfcadca3a",
    ("synth:seed=1,lesion=macro,version=3", 0): "338a80b7e1d397e3",
    ("synth:seed=1,lesion=macro,version=3", 2): "105ba6b34305dbba",
    ("synth:seed=1,lesion=macro,version=3", 4): "fae6bf09c05828b2",
    ("synth:seed=2,lesion=micro,version=3", 0): "dee63e6dc7d7370f",
    ("synth:seed=2,lesion=micro,version=3", 2): "4a4075afe1a2d4c2",
    ("synth:seed=2,lesion=micro,version=3", 4): "3ade1ab626b40efc",
    ("synth:seed=5,lesion=itc,version=3", 0): "bfa68973f23b62ed",
    ("synth:seed=5,lesion=itc,version=3", 2): "bb00e939f52c5af6",
    ("synth:seed=5,lesion=itc,version=3", 4): "740670177cb02c4c",
    ("synth:seed=4,lesion=negative,version=3", 0): "822edec9b4f76846",
    ("synth:seed=4,lesion=negative,version=3", 2): "a0346d97fdb6f6d6",
    ("synth:seed=4,lesion=negative,version=3", 4): "2ee347239eb0ee1f",
    ("synth:seed=2,lesion=micro,version=3,texture=camelyon16", 0): "defe375a709efb92",
    ("synth:seed=2,lesion=micro,version=3,texture=camelyon16", 2): "8213f58cfc3bfbcc",
    ("synth:seed=2,lesion=micro,version=3,texture=camelyon16", 4): "79dd998846bb9753",
    ("synth:seed=1,lesion=macro,version=4", 0): "3088b55a9cf3b246",
    ("synth:seed=1,lesion=macro,version=4", 2): "50d95c70b1747f79",
    ("synth:seed=1,lesion=macro,version=4", 4): "49c64de68bfb6880",
    ("synth:seed=2,lesion=micro,version=4", 0): "be0d9d09530ac0ad",
    ("synth:seed=2,lesion=micro,version=4", 2): "f96b630c8e7d2149",
    ("synth:seed=2,lesion=micro,version=4", 4): "4a1dd877c152bad4",
    ("synth:seed=5,lesion=itc,version=4", 0): "bfa68973f23b62ed",
    ("synth:seed=5,lesion=itc,version=4", 2): "bb00e939f52c5af6",
    ("synth:seed=5,lesion=itc,version=4", 4): "80bb852f8edbf5e2",
    ("synth:seed=4,lesion=negative,version=4", 0): "822edec9b4f76846",
    ("synth:seed=4,lesion=negative,version=4", 2): "a0346d97fdb6f6d6",
    ("synth:seed=4,lesion=negative,version=4", 4): "cb329d9e371a4b49",
    ("synth:seed=2,lesion=micro,version=4,texture=camelyon16", 0): "6b3c024f5d254a7e",
    ("synth:seed=2,lesion=micro,version=4,texture=camelyon16", 2): "3430ac45c8961b3c",
    ("synth:seed=2,lesion=micro,version=4,texture=camelyon16", 4): "bf50ff7d185233b0",
}


# Recorded on an AVX-512 machine, so the other way round from V1_DIGESTS: the AVX2 path's digest where it
# differs (computed there with NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL"; OpenBLAS's kernel choice changed
# none).
LATER_AVX2_DIGESTS = {
    ("synth:seed=4,lesion=negative,version=2", 0): "5a7bf5f969bdf25f",
    ("synth:seed=4,lesion=negative,version=2", 2): "890b51e14d916d3b",
    ("synth:seed=4,lesion=negative,version=3", 0): "5a7bf5f969bdf25f",
    ("synth:seed=4,lesion=negative,version=3", 2): "890b51e14d916d3b",
    ("synth:seed=5,lesion=itc,version=4", 4): "f4b6247e7f9b532e",
    ("synth:seed=4,lesion=negative,version=4", 0): "5a7bf5f969bdf25f",
    ("synth:seed=4,lesion=negative,version=4", 2): "890b51e14d916d3b",
}


def _digest(uri: str, level: int) -> str:
    slide = VirtualSlide(uri)
    if slide.lesions:
        cx, cy = slide.lesions[0].mean(0)
    else:
        section = slide.layout.sections[0]
        cx, cy = section.cx, section.cy
    d = slide.level_downsamples[level]
    region = slide.read_region((int(cx - 48 * d), int(cy - 32 * d)), level, (96, 64))
    return hashlib.sha256(region.tobytes()).hexdigest()[:16]


@pytest.mark.parametrize(("uri", "level"), list(V1_DIGESTS))
def test_v1_pixels_are_unchanged(uri: str, level: int) -> None:
    accepted = {V1_DIGESTS[(uri, level)], X86_V4_DIGESTS.get((uri, level))}
    assert _digest(uri, level) in accepted


def test_version_1_spelled_out_is_the_same_slide() -> None:
    uri = "synth:seed=2,lesion=micro"
    assert VirtualSlide(uri + ",version=1").path == VirtualSlide(uri).path
    assert _digest(uri + ",version=1", 0) == V1_DIGESTS[(uri, 0)]


@pytest.mark.parametrize(("uri", "level"), list(LATER_DIGESTS))
def test_later_versions_pixels_are_unchanged(uri: str, level: int) -> None:
    accepted = {LATER_DIGESTS[(uri, level)], LATER_AVX2_DIGESTS.get((uri, level))}
    assert _digest(uri, level) in accepted
