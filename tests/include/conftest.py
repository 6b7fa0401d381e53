"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest

from include.mlops.data import ingest
from include.mlops.datagen import write_batch
from include.mlops.spec import find_spec


@pytest.fixture
def churn_published(state, pipelines_dir):
    """The churn spec with one validated 1,500-row batch published."""
    spec = find_spec("churn")
    write_batch(spec, "batch1", rows=1500, seed=11)
    for uri in ingest.discover(spec):
        ingest.ingest_file(spec, uri)
    return spec
