"""Quarantine listing and release: a fixed file goes back to the landing zone and is ingested again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from include.mlops import cli, storage
from include.mlops.data import ingest
from include.mlops.data.ledger import Ledger
from include.mlops.data.quarantine import MARKER, ReleaseRefused, list_quarantine, release
from include.mlops.datagen import housing
from include.mlops.errors import ValidationFailed
from include.mlops.spec import find_spec


def _settle(path: Path) -> None:
    old = time.time() - 3600  # settled long ago (data.settle_seconds)
    os.utime(path, (old, old))


@pytest.fixture
def quarantined(state, pipelines_dir):
    """A housing batch with a negative distance, quarantined through the ledger like the DAG does."""
    spec = find_spec("housing")
    landing = Path(storage.local_path(spec.uri("landing")))
    landing.mkdir(parents=True, exist_ok=True)
    frame = housing(80, seed=4)
    bad = frame.copy()
    bad.loc[bad.index[:3], "distance_km"] = -5.0
    path = landing / "batch.csv"
    path.write_bytes(bad.to_csv(index=False).encode())
    _settle(path)
    ledger = Ledger()
    uris = ingest.discover(spec, run_id="run1", ledger=ledger)
    assert [storage.basename(u) for u in uris] == ["batch.csv"]
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_claimed(spec, uris[0], run_id="run1", ledger=ledger)
    moved = Path(storage.local_path(failed.value.quarantined_to))
    return spec, moved, frame, ledger


def test_quarantine_lists_file_reason_and_time(quarantined, capsys):
    spec, moved, _, _ = quarantined
    [entry] = list_quarantine(spec)
    assert entry["folder"] == moved.parent.name and entry["files"] == ["batch.csv"]
    assert entry["status"] == "quarantined"
    assert "distance_km: expect_column_values_to_be_between" in entry["reason"]
    assert entry["quarantined_at"].endswith("Z")
    assert set(entry["reports"]) == {"json", "html", "data_docs"}
    assert cli.main(["quarantine", "housing"]) == 0
    out = capsys.readouterr().out
    assert moved.parent.name in out and "batch.csv" in out and "distance_km" in out


def test_fixed_file_is_released_and_published(quarantined, capsys):
    spec, moved, frame, ledger = quarantined
    moved.write_bytes(frame.to_csv(index=False).encode())  # the fix, made in the quarantine folder
    _settle(moved)
    assert cli.main(["release", "housing", str(moved.parent)]) == 0
    record = json.loads(capsys.readouterr().out)
    landing = Path(storage.local_path(spec.uri("landing")))
    assert (landing / "batch.csv").is_file() and not moved.exists()
    assert record["edited"] is True and record["forced"] is False
    assert record["sha256_released"] == storage.sha256(storage.join(spec.uri("landing"), "batch.csv"))
    assert record["sha256_quarantined"] != record["sha256_released"]
    marker = json.loads((moved.parent / MARKER).read_text())
    assert marker["released_by"] and marker["released_at"] == record["released_at"]
    for report in ("validation.json", "validation.html", "data_docs.html"):
        assert (moved.parent / report).is_file()  # the record of why it was held stays
    assert [p.name for p in landing.iterdir()] == ["batch.csv"]  # no temporary name left behind

    uris = ingest.discover(spec, run_id="run2", ledger=ledger)  # a new version for the ledger
    assert [storage.basename(u) for u in uris] == ["batch.csv"]
    result = ingest.ingest_claimed(spec, uris[0], run_id="run2", ledger=ledger)
    assert result.status == "published" and result.rows == len(frame)
    assert set(result.reports) == {"json", "html", "data_docs"}
    assert ingest.discover(spec, run_id="run3", ledger=ledger) == []  # processed once
    [entry] = list_quarantine(spec)
    assert entry["status"] == "released" and entry["files"] == []
    with pytest.raises(ReleaseRefused, match=r"holds no quarantined file \(already released"):
        release(spec, moved.parent.name)


def test_unchanged_file_is_refused_unless_forced(quarantined):
    spec, moved, _, ledger = quarantined
    with pytest.raises(
        ReleaseRefused, match=r"unchanged since it was quarantined .* would fail validation again"
    ):
        release(spec, moved.parent.name)
    assert moved.exists()  # nothing moved
    record = release(spec, str(moved), force=True, who="alice")  # the file itself as the target
    assert record["forced"] is True and record["edited"] is False and record["released_by"] == "alice"
    landed = Path(storage.local_path(spec.uri("landing"))) / "batch.csv"
    assert landed.is_file()
    _settle(landed)
    assert [storage.basename(u) for u in ingest.discover(spec, run_id="run2", ledger=ledger)] == ["batch.csv"]


def test_missing_folder_is_refused(quarantined, capsys):
    spec, _, _, _ = quarantined
    with pytest.raises(ReleaseRefused, match="does not exist; list the quarantined batches"):
        release(spec, "20990101T000000Z-deadbeef")
    assert cli.main(["release", "housing", "20990101T000000Z-deadbeef"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_name_taken_in_landing_zone_is_refused(quarantined):
    spec, moved, frame, _ = quarantined
    moved.write_bytes(frame.to_csv(index=False).encode())
    landing = Path(storage.local_path(spec.uri("landing")))
    (landing / "batch.csv").write_bytes(b"newer upload")
    with pytest.raises(ReleaseRefused, match=r"already holds batch\.csv"):
        release(spec, moved.parent.name)
    assert moved.exists() and (landing / "batch.csv").read_bytes() == b"newer upload"


def test_a_folder_outside_the_quarantine_zone_is_refused(quarantined, tmp_path):
    spec = quarantined[0]
    elsewhere = tmp_path / "fix"
    elsewhere.mkdir()
    (elsewhere / "batch.csv").write_text("id\n1\n")
    with pytest.raises(ReleaseRefused, match="is not a quarantine folder of this pipeline"):
        release(spec, str(elsewhere / "batch.csv"))
    assert (elsewhere / "batch.csv").exists() and not (elsewhere / MARKER).exists()
