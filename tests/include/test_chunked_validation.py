"""Chunked validation of large files: the same verdict (and counts) as whole-file validation.

Every comparison runs the real suite both ways: ``validate_frame`` on ``read_frame`` (the
small-file path) and ``validate_file`` chunk by chunk, and compares each expectation's verdict
and result document.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.mlops import datagen, storage
from include.mlops.data import chunked_validation, datasets, ingest, reading
from include.mlops.data.chunked_validation import should_stream, validate_file
from include.mlops.data.reading import read_frame
from include.mlops.data.validation import load_suite, render_html, validate_frame
from include.mlops.errors import DataError, ValidationFailed
from include.mlops.paths import resolve_project_path
from include.mlops.spec import find_spec

ROOT = Path(__file__).resolve().parents[2]
CHURN_SUITE = ROOT / "include" / "expectations" / "churn.json"


def churn_suite() -> dict[str, Any]:
    return load_suite(CHURN_SUITE)


def churn_suite_with_types() -> dict[str, Any]:
    """churn.json plus dtype checks: GE checks an object column value by value, others by dtype."""
    suite = churn_suite()
    suite["expectations"] += [
        {
            "type": "expect_column_values_to_be_of_type",
            "kwargs": {"column": "tenure_months", "type_": "int64"},
        },
        {"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "contract", "type_": "str"}},
        {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": "age", "type_list": ["int", "int64"]},
        },
    ]
    return suite


def write(frame: pd.DataFrame, folder: Path, name: str, *, row_group: int | None = None) -> str:
    path = folder / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False, row_group_size=row_group)
    else:
        frame.to_csv(path, index=False)
    return f"file://{path}"


def key(item: dict[str, Any]) -> str:
    config = item["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    return f"{config['type']} {json.dumps(kwargs, sort_keys=True, default=str)}"


def by_expectation(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key(item): item for item in result["results"]}


def find(result: dict[str, Any], kind: str, column: str) -> dict[str, Any]:
    """The one result of this expectation type on this column."""
    (item,) = [
        r
        for r in result["results"]
        if r["expectation_config"]["type"] == f"expect_{kind}"
        and r["expectation_config"]["kwargs"].get("column") == column
    ]
    return item


def both(uri: str, fmt: str, suite: dict[str, Any], chunk_rows: int) -> tuple[dict, dict]:
    whole = validate_frame(read_frame(uri, fmt), suite).result
    chunked = validate_file(uri, fmt, suite, chunk_rows=chunk_rows).result
    return whole, chunked


def assert_same(whole: dict[str, Any], chunked: dict[str, Any]) -> None:
    """Same verdict overall and per expectation; same result documents (counts, first values,
    global row labels) wherever the expectation did not raise."""
    assert chunked["success"] == whole["success"]
    assert chunked["statistics"]["successful_expectations"] == whole["statistics"]["successful_expectations"]
    expected, actual = by_expectation(whole), by_expectation(chunked)
    assert actual.keys() == expected.keys()
    for name, item in expected.items():
        assert actual[name]["success"] == item["success"], name
        if not (item.get("exception_info") or {}).get("raised_exception"):
            assert actual[name]["result"] == item["result"], name


@pytest.fixture
def churn_frame() -> pd.DataFrame:
    return datagen.churn(5000, seed=7)


def test_csv_chunks_align_with_pandas_type_inference_blocks():
    assert reading.csv_block_rows(11) == 65536  # 2**20 // 11 = 95325 -> 65536
    assert reading.csv_block_rows(20) == 32768
    assert reading.csv_block_rows(1) == 524288
    assert reading.aligned_chunk_rows(100, 65536) == 65536
    assert reading.aligned_chunk_rows(65537, 65536) == 131072


def test_chunk_size_follows_the_width_unless_configured(monkeypatch):
    monkeypatch.delenv(chunked_validation.CHUNK_ROWS_ENV, raising=False)
    assert chunked_validation.configured_chunk_rows(20) == 500_000
    assert chunked_validation.configured_chunk_rows(5) == 1_000_000
    assert chunked_validation.configured_chunk_rows(5000) == 10_000
    monkeypatch.setenv(chunked_validation.CHUNK_ROWS_ENV, "1_234")
    assert chunked_validation.configured_chunk_rows(20) == 1234


def test_large_files_stream_and_small_ones_do_not(tmp_path, monkeypatch, churn_frame):
    monkeypatch.delenv(chunked_validation.STREAM_BYTES_ENV, raising=False)
    monkeypatch.delenv(chunked_validation.CHUNK_ROWS_ENV, raising=False)
    parquet = write(churn_frame, tmp_path, "b.parquet")
    csv = write(churn_frame, tmp_path, "b.csv")
    assert not should_stream(parquet, "parquet") and not should_stream(csv, "csv")
    assert should_stream(parquet, "parquet", chunk_rows=1000)  # more rows than one chunk
    monkeypatch.setenv(chunked_validation.STREAM_BYTES_ENV, "1000")
    assert should_stream(csv, "csv")
    assert not should_stream(f"file://{tmp_path}/missing.csv", "csv")  # the whole-file path reports it


@pytest.mark.slow
def test_good_parquet_file_same_result_as_whole_file(tmp_path, churn_frame):
    uri = write(churn_frame, tmp_path, "good.parquet", row_group=700)
    whole, chunked = both(uri, "parquet", churn_suite_with_types(), chunk_rows=1000)
    assert whole["success"] is True
    assert_same(whole, chunked)
    assert chunked["meta"]["chunked"] == {
        **chunked["meta"]["chunked"],
        "chunks": 5,
        "chunk_rows": 1000,
        "rows": 5000,
        "passes": 1,
        "fallbacks": [],
    }


@pytest.mark.slow
def test_only_the_last_chunk_bad_fails_with_exact_counts(tmp_path, churn_frame):
    bad = churn_frame.copy()
    bad.loc[[4990, 4995, 4999], "tenure_months"] = 500
    bad.loc[4997, "contract"] = "lifetime"
    bad.loc[4998, "customer_id"] = np.nan  # one null id: the column becomes float64
    uri = write(bad, tmp_path, "bad.parquet", row_group=1000)
    whole, chunked = both(uri, "parquet", churn_suite(), chunk_rows=1000)
    assert whole["success"] is False
    assert_same(whole, chunked)
    tenure = find(chunked, "column_values_to_be_between", "tenure_months")["result"]
    assert (tenure["unexpected_count"], tenure["element_count"]) == (3, 5000)
    assert tenure["partial_unexpected_index_list"] == [4990, 4995, 4999]  # file rows, not chunk rows
    contract = find(chunked, "column_values_to_be_in_set", "contract")["result"]
    assert contract["partial_unexpected_list"] == ["lifetime"]
    assert find(chunked, "column_values_to_not_be_null", "customer_id")["result"]["unexpected_count"] == 1
    assert chunked["meta"]["chunked"]["chunks"] == 5


@pytest.mark.slow
def test_duplicates_split_across_chunks_are_caught(tmp_path, churn_frame):
    frame = churn_frame.copy()
    frame["account"] = [f"acct-{i:06d}" for i in range(len(frame))]
    frame.loc[4999, "customer_id"] = frame.loc[3, "customer_id"]  # first and last chunk
    frame.loc[[2500, 4998], "account"] = frame.loc[10, "account"]  # a string id, three times
    suite = churn_suite()
    suite["expectations"].append(
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "account"}}
    )
    uri = write(frame, tmp_path, "dups.parquet", row_group=1000)
    whole, chunked = both(uri, "parquet", suite, chunk_rows=1000)
    assert_same(whole, chunked)
    ids = find(chunked, "column_values_to_be_unique", "customer_id")
    assert ids["success"] is False
    assert ids["result"]["unexpected_count"] == 2
    assert ids["result"]["partial_unexpected_index_list"] == [3, 4999]
    accounts = find(chunked, "column_values_to_be_unique", "account")["result"]
    assert accounts["unexpected_count"] == 3
    assert accounts["partial_unexpected_list"] == ["acct-000010"] * 3
    assert chunked["meta"]["chunked"]["fallbacks"] == []  # tracked across chunks, no whole-column read


@pytest.mark.slow
def test_unique_with_mostly_and_nulls_matches_whole_file(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"code": rng.integers(0, 3000, 4000).astype(float), "name": rng.choice(list("abc"), 4000)}
    )
    frame.loc[rng.choice(4000, 300, replace=False), "code"] = np.nan
    frame.loc[17, "code"] = -0.0  # pandas counts -0.0 and 0.0 as the same value
    frame.loc[3999, "code"] = 0.0
    suite = {
        "name": "u",
        "expectations": [
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "code", "mostly": 0.3}},
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "name"}},
        ],
    }
    uri = write(frame, tmp_path, "u.parquet")
    whole, chunked = both(uri, "parquet", suite, chunk_rows=700)
    assert_same(whole, chunked)


@pytest.mark.slow
def test_csv_same_result_as_whole_file_with_types_that_change_between_chunks(tmp_path):
    frame = datagen.churn(140_000, seed=3)  # 11 columns: 65,536-row parser blocks, 3 chunks
    frame["support_calls"] = frame["support_calls"].astype(float)
    frame.loc[139_990, "support_calls"] = np.nan  # int64 in two chunks, float64 in the last
    frame["age"] = frame["age"].astype(object)
    frame.loc[139_000, "age"] = "unknown"  # a string: object in the last chunk only
    frame.loc[20, "churned"] = 2
    uri = write(frame, tmp_path, "big.csv")
    whole, chunked = both(uri, "csv", churn_suite_with_types(), chunk_rows=1000)  # rounded up to one block
    assert whole["success"] is False
    assert_same(whole, chunked)
    meta = chunked["meta"]["chunked"]
    assert (meta["chunks"], meta["chunk_rows"], meta["passes"]) == (
        3,
        65536,
        2,
    )  # again, with whole-file dtypes


@pytest.mark.slow
def test_good_csv_same_result_as_whole_file(tmp_path):
    uri = write(datagen.churn(140_000, seed=5), tmp_path, "good.csv")
    whole, chunked = both(uri, "csv", churn_suite_with_types(), chunk_rows=65536)
    assert whole["success"] is True
    assert_same(whole, chunked)
    assert chunked["meta"]["chunked"]["passes"] == 1


@pytest.mark.slow
def test_expectations_that_do_not_combine_fall_back_to_their_columns(tmp_path, monkeypatch, churn_frame):
    frame = churn_frame.copy()
    frame.loc[4500, "monthly_charges"] = 10_000.0
    suite = {
        "name": "aggregates",
        "expectations": [
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "monthly_charges", "max_value": 66},
            },
            {"type": "expect_column_min_to_be_between", "kwargs": {"column": "age", "min_value": 18}},
            {
                "type": "expect_column_max_to_be_between",
                "kwargs": {"column": "event_time", "max_value": "2026-06-01"},
            },
            {"type": "expect_column_values_to_be_increasing", "kwargs": {"column": "customer_id"}},
            {
                "type": "expect_compound_columns_to_be_unique",
                "kwargs": {"column_list": ["customer_id", "contract"]},
            },
            {
                "type": "expect_column_distinct_values_to_equal_set",
                "kwargs": {"column": "internet_service", "value_set": ["dsl", "fiber", "none"]},
            },
            {
                "type": "expect_table_columns_to_match_ordered_list",
                "kwargs": {"column_list": list(frame.columns)},
            },
            {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 5000}},
            {
                "type": "expect_column_values_to_be_of_type",
                "kwargs": {"column": "tenure_months", "type_": "int64"},
            },
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "no_such_column", "min_value": 0},
            },
        ],
    }
    uri = write(frame, tmp_path, "agg.parquet", row_group=1000)
    whole = validate_frame(read_frame(uri, "parquet"), suite).result
    reads: list[list[str] | None] = []
    read_columns = reading.read_columns

    def spy(uri: str, fmt: str, columns: list[str] | None, **kwargs: Any) -> pd.DataFrame:
        reads.append(columns)
        return read_columns(uri, fmt, columns, **kwargs)

    monkeypatch.setattr(reading, "read_columns", spy)
    chunked = validate_file(uri, "parquet", suite, chunk_rows=1000).result
    assert_same(whole, chunked)
    fallbacks = {(f["expectation"], tuple(f["columns"])) for f in chunked["meta"]["chunked"]["fallbacks"]}
    assert fallbacks == {
        ("expect_column_mean_to_be_between", ("monthly_charges",)),
        ("expect_column_values_to_be_increasing", ("customer_id",)),
        ("expect_compound_columns_to_be_unique", ("customer_id", "contract")),
        ("expect_column_distinct_values_to_equal_set", ("internet_service",)),
        ("expect_column_values_to_be_between", ("no_such_column",)),
    }
    # each read only the column(s) it needs; never the whole table (min, max, types, counts combine)
    assert sorted(map(tuple, reads)) == [
        ("customer_id",),
        ("customer_id", "contract"),
        ("internet_service",),
        ("monthly_charges",),
    ]


@pytest.mark.slow
def test_no_chunk_holds_more_rows_than_configured(tmp_path, monkeypatch, churn_frame):
    uri = write(churn_frame, tmp_path, "bounded.parquet")  # one 5,000-row group
    read: list[int] = []
    given: list[int] = []
    iter_frames = reading.iter_frames

    def spy_frames(*args: Any, **kwargs: Any):
        for frame in iter_frames(*args, **kwargs):
            read.append(len(frame))
            yield frame

    original_validator = chunked_validation._Run._validator

    def spy_validator(self, frame: pd.DataFrame):
        given.append(len(frame))
        return original_validator(self, frame)

    monkeypatch.setattr(reading, "iter_frames", spy_frames)
    monkeypatch.setattr(chunked_validation._Run, "_validator", spy_validator)
    outcome = validate_file(uri, "parquet", churn_suite(), chunk_rows=700)
    assert outcome.success
    assert read == [700] * 7 + [100]
    assert max(given) <= 700  # Great Expectations never sees more than one chunk
    assert outcome.result["meta"]["chunked"]["chunks"] == math.ceil(5000 / 700)


def test_unreadable_or_empty_files_are_data_errors(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("customer_id,event_time\n")
    with pytest.raises(DataError, match="has no data rows"):
        validate_file(f"file://{header_only}", "csv", churn_suite())
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty"):
        validate_file(f"file://{empty}", "parquet", churn_suite())
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot be read as parquet"):
        validate_file(f"file://{garbage}", "parquet", churn_suite())


@pytest.mark.slow
def test_ragged_line_late_in_a_csv_is_the_same_data_error(tmp_path):
    frame = datagen.churn(70_000, seed=2)
    uri = write(frame, tmp_path, "ragged.csv")
    with open(storage.local_path(uri), "a", encoding="utf-8") as handle:
        handle.write("1,2,3,4,5,6,7,8,9,10,11,12,13\n")
    with pytest.raises(DataError) as whole:
        read_frame(uri, "csv")
    with pytest.raises(DataError) as chunked:
        validate_file(uri, "csv", churn_suite(), chunk_rows=65536)
    assert str(chunked.value) == str(whole.value)


@pytest.mark.slow
def test_ingest_streams_large_files_and_publishes_them_chunk_by_chunk(state, pipelines_dir, monkeypatch):
    monkeypatch.setenv(chunked_validation.STREAM_BYTES_ENV, "1")  # every file counts as large
    monkeypatch.setenv(chunked_validation.CHUNK_ROWS_ENV, "400")
    spec = find_spec("churn")
    good = datagen.write_batch(spec, "good", rows=1500, seed=1)
    source = pd.read_parquet(storage.local_path(good))
    bad = datagen.write_batch(spec, "bad", rows=900, seed=2, id_offset=10_000, malformed_batch=True)
    expected_reasons = validate_frame(
        read_frame(bad, "parquet"), load_suite(resolve_project_path(spec.validation.suite))
    ).failures
    result = ingest.ingest_file(spec, good)
    assert (result.status, result.rows) == ("published", 1500)
    published = pd.read_parquet(storage.join(result.location, "data.parquet"))
    pd.testing.assert_frame_equal(published, source)
    report = storage.read_json(storage.join(result.location, "validation.json"))
    assert report["meta"]["chunked"]["chunks"] == 4 and report["success"] is True
    assert "Validated in 4 chunks" in storage.read_bytes(result.report).decode()
    assert datasets.published_datasets(spec)[0]["rows"] == 1500
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_file(spec, bad)
    assert all(reason in str(failed.value) for reason in expected_reasons[:5])


@pytest.mark.slow
def test_large_csv_is_published_as_parquet_with_whole_file_types(tmp_path):
    frame = datagen.churn(140_000, seed=4)
    frame["support_calls"] = frame["support_calls"].astype(float)
    frame.loc[139_999, "support_calls"] = np.nan  # float64 only in the last chunk
    uri = write(frame, tmp_path, "publish.csv")
    dest = f"file://{tmp_path}/out.parquet"
    rows, columns = reading.write_parquet(uri, "csv", dest, rows=65536)
    assert (rows, columns) == (140_000, list(frame.columns))
    pd.testing.assert_frame_equal(pd.read_parquet(storage.local_path(dest)), read_frame(uri, "csv"))


def test_report_says_how_many_chunks():
    result = {
        "success": True,
        "statistics": {"evaluated_expectations": 0, "successful_expectations": 0},
        "results": [],
        "meta": {"chunked": {"chunks": 12, "chunk_rows": 500_000, "rows": 5_800_000}},
    }
    html = render_html(result, title="t")
    assert "Validated in 12 chunks of at most 500,000 rows (5,800,000 rows in all)" in html
