"""Large files get the small-file path's content checks, chunk by chunk, with the same one-line reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from include.mlops import storage
from include.mlops.data import ingest
from include.mlops.data.chunked_validation import CHUNK_ROWS_ENV, STREAM_BYTES_ENV, should_stream
from include.mlops.errors import ValidationFailed
from include.mlops.spec import find_spec
from tests.include.bad_inputs import BadInput, corpus

CASES = [c for c in corpus() if c.outcome == "quarantined"]


@pytest.fixture
def streamed(monkeypatch):
    """Every non-empty file takes the large-file path, in chunks of a few rows."""
    monkeypatch.setenv(STREAM_BYTES_ENV, "1")
    monkeypatch.setenv(CHUNK_ROWS_ENV, "7")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_streamed_bad_input_gets_the_small_file_reason(case: BadInput, state, pipelines_dir, streamed):
    spec = find_spec(case.pipeline)
    landing = Path(storage.local_path(spec.uri("landing")))
    landing.mkdir(parents=True, exist_ok=True)
    case.write(landing)
    uri = storage.join(spec.uri("landing"), case.filename)
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_file(spec, uri)
    message = str(failed.value)
    assert case.reason in message
    assert "\n" not in message and "Traceback" not in message
    assert set(failed.value.reports) == {"json", "html", "data_docs"}


def _reason(exc: ValidationFailed) -> str:
    report = storage.read_json(exc.reports["json"])
    return report["results"][0]["result"]["observed_value"]


@pytest.mark.parametrize(
    "column, value, row, reason",
    [
        ("listed_at", "next tuesday", -3, "unparseable timestamp(s), e.g. 'next tuesday'"),
        ("sqft", "unknown", 70_000, "column sqft should hold numbers but 2 of"),
    ],
)
def test_large_csv_reason_matches_whole_file(column, value, row, reason, state, pipelines_dir, monkeypatch):
    """A CSV of several parser blocks, broken only in a late chunk: same one-line reason as whole-file."""
    from include.mlops.datagen import housing

    spec = find_spec("housing")
    frame = housing(140_000, seed=3).astype({column: object})
    frame.iloc[[row, row - 1], frame.columns.get_loc(column)] = value
    landing = Path(storage.local_path(spec.uri("landing")))
    landing.mkdir(parents=True, exist_ok=True)
    data = frame.to_csv(index=False).encode()
    reasons = []
    for threshold in (None, "1024"):  # whole file, then streamed (chunks of one parser block)
        if threshold:
            monkeypatch.setenv(STREAM_BYTES_ENV, threshold)
            monkeypatch.setenv(CHUNK_ROWS_ENV, "1")
        (landing / "big.csv").write_bytes(data)
        uri = storage.join(spec.uri("landing"), "big.csv")
        assert should_stream(uri, "csv") == bool(threshold)
        with pytest.raises(ValidationFailed) as failed:
            ingest.ingest_file(spec, uri)
        reasons.append(_reason(failed.value))
        time.sleep(1.1)  # quarantine folders are named by the second
    assert reasons[0] == reasons[1]
    assert reason in reasons[1]
    quarantined = sorted((landing.parent.parent / "quarantine" / "housing").glob("*/big.csv"))
    assert [p.read_bytes() == data for p in quarantined] == [True, True]  # byte for byte, both times


def test_a_csv_field_longer_than_the_csv_module_default_is_read(tmp_path):
    from include.mlops.data.sniffing import sniff_bytes

    text = "id,note\n1," + "x" * 200_000 + "\n2,short\n"
    sniff_bytes(text.encode(), "csv", name="long.csv")  # no csv.Error: pandas reads it too
