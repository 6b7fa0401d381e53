"""Every bad input in the corpus fails alone: one actionable line, quarantined intact, good files published."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from include.mlops import storage
from include.mlops.data import datasets, ingest
from include.mlops.datagen import write_batch
from include.mlops.errors import ValidationFailed
from include.mlops.spec import find_spec
from tests.include.bad_inputs import BadInput, corpus

CASES = corpus()


def test_corpus_is_large_and_distinct():
    names = [case.name for case in CASES]
    assert len(CASES) >= 30
    assert len(set(names)) == len(names)
    assert len({(c.pipeline, c.filename) for c in CASES}) == len(CASES)


def _fingerprint(path: Path) -> str:
    """sha256 of the bytes; for a symbolic link, of the link itself (its target path), never the target."""
    data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_alone(case: BadInput, state, pipelines_dir):
    spec = find_spec(case.pipeline)
    good_uri = write_batch(spec, "good", rows=60, seed=1)
    good_digest = storage.sha256(good_uri)
    landing = Path(storage.local_path(spec.uri("landing")))
    case.write(landing)
    bad_path = landing / case.filename
    bad_digest = _fingerprint(bad_path)
    outside = {p: p.read_bytes() for p in (landing.parent.parent / "outside").glob("*")}

    old = time.time() - 3600  # every file settled long ago (data.settle_seconds), link targets too
    for path in [*landing.iterdir(), *outside]:
        os.utime(path, (old, old), follow_symlinks=False)
        os.utime(path, (old, old))
    uris = ingest.discover(spec, run_id="corpus")  # the DAG's listing: settled, claimed in the ledger
    if case.outcome == "skipped":
        assert [storage.basename(u) for u in uris] == [
            "good.parquet" if case.pipeline == "churn" else "good.csv"
        ]
    failures: dict[str, ValidationFailed] = {}
    results = {}
    for uri in uris:  # one mapped task per file, as in the ingest DAG
        try:
            results[storage.basename(uri)] = ingest.ingest_file(spec, uri, run_id="corpus")
        except ValidationFailed as exc:
            failures[storage.basename(uri)] = exc

    published = datasets.published_datasets(spec)
    assert [m["sha256"] for m in published] == [good_digest]  # nothing else published, nothing twice
    assert storage.is_complete(published[0]["uri"])

    if case.outcome == "skipped":
        assert not failures and bad_path.exists()
        return
    if case.outcome == "duplicate":
        assert not failures
        assert sorted(r.status for r in results.values()) == ["duplicate", "published"]
        return

    assert list(failures) == [case.filename]
    assert [r.status for r in results.values()] == ["published"]
    exc = failures[case.filename]
    message = str(exc)
    assert "\n" not in message and "\r" not in message and "Traceback" not in message
    assert message.startswith(f"pipeline {spec.name}: {case.filename} ")
    assert case.reason in message
    assert len(message) < 1000
    moved = Path(storage.local_path(exc.quarantined_to))
    assert moved.name == case.filename and not bad_path.exists() and not bad_path.is_symlink()
    assert _fingerprint(moved) == bad_digest
    assert (moved.parent / "validation.json").is_file()
    assert (moved.parent / "validation.html").is_file()
    report = storage.read_json(str(moved.parent / "validation.json"))
    assert report["success"] is False and report["meta"]["source"] == case.filename
    for path, data in outside.items():  # a link's target is neither read into a dataset nor moved
        assert path.read_bytes() == data
