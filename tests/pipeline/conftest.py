"""Fixtures shared by the pipeline tests (helpers that are plain functions live in pipeline_fixtures.py)."""

from __future__ import annotations

import pytest
from pipeline_fixtures import base_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The session's one trained tiny run ``(cfg, result)`` (trained once, reused by every module)."""
    return base_run(tmp_path_factory.getbasetemp() / "pipeline")
