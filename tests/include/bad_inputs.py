"""A corpus of bad landed files, generated from ``datagen`` frames with seeded mutations.

Every case is one file written into a pipeline's landing zone (churn lands Parquet, housing lands
CSV) together with the outcome ingestion must reach:

* ``quarantined`` (almost all): ``ingest_file`` raises ``ValidationFailed`` with one line naming the
  pipeline, the file and ``reason``; the file sits byte for byte in quarantine beside its
  ``validation.json`` and ``validation.html``.
* ``duplicate``: the same bytes landing twice under another name are not an error. The content is
  already published, so the second copy is archived with status ``duplicate``: no second dataset,
  hence no second retrain. Quarantining it would page someone for a harmless re-upload.
* ``skipped``: a file still being written under a temporary name (``x.csv.part``) is never
  discovered; once it settles under its real name, a zero-byte file is quarantined as empty.

Semantics where the issue leaves room: a UTF-8 (or UTF-16) byte-order mark is rejected ("remove the
byte-order mark") rather than silently stripped, so the producer fixes its export; a symbolic link
whose target lies outside the landing zone is never read: the link itself is quarantined (its
checksum is that of the link's target path) and the target is left untouched. A filename with
spaces and non-ASCII characters is valid in itself; the case pairs it with bad values to show that
messages and quarantine cope with such names.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from include.mlops.datagen import churn, housing

ROWS = 60


@dataclass(frozen=True)
class BadInput:
    name: str
    pipeline: str  # "churn" (Parquet) or "housing" (CSV)
    filename: str
    write: Callable[[Path], None]  # writes the file into the given landing folder
    reason: str  # substring the one-line failure message must contain
    outcome: str = "quarantined"  # | "duplicate" | "skipped"


def _house(seed: int = 7) -> pd.DataFrame:
    return housing(ROWS, seed=seed, id_offset=10_000)


def _cust(seed: int = 7) -> pd.DataFrame:
    return churn(ROWS, seed=seed, id_offset=10_000)


def _csv(frame: pd.DataFrame, **kwargs: object) -> bytes:
    return frame.to_csv(index=False, **kwargs).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _bytes(filename: str, data: Callable[[], bytes]) -> Callable[[Path], None]:
    def write(landing: Path) -> None:
        (landing / filename).write_bytes(data())

    return write


def _mutate(
    frame: pd.DataFrame, column: str, value: object, *, seed: int, share: float = 0.2
) -> pd.DataFrame:
    """``frame`` with ``column`` set to ``value`` in a seeded random share of the rows."""
    rows = np.random.default_rng(seed).choice(len(frame), size=max(1, int(len(frame) * share)), replace=False)
    out = frame.copy()
    if not isinstance(value, int | float) or isinstance(value, bool):
        out[column] = out[column].astype(object)
    out.iloc[rows, out.columns.get_loc(column)] = value
    return out


def _truncated_row() -> bytes:
    text = _csv(_house()).decode().rstrip("\n")
    head, last = text.rsplit("\n", 1)
    return (head + "\n" + ",".join(last.split(",")[:3])).encode()


def _wide_row() -> bytes:
    lines = _csv(_house()).decode().splitlines()
    lines[30] = ",".join([lines[30], *["0"] * 5000])
    return ("\n".join(lines) + "\n").encode()


def _schema_change() -> bytes:
    frame = _house()
    first, second = frame.iloc[:30], frame.iloc[30:].assign(agent="x")
    return _csv(first) + _csv(second)


def _future(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    out = frame.copy()
    out.loc[out.index[5], column] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=400)
    return out


def _corrupt_footer() -> bytes:
    data = bytearray(_parquet(_cust()))
    footer = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer
    rng = np.random.default_rng(3)
    data[start : start + footer] = rng.integers(0, 256, footer, dtype=np.uint8).tobytes()
    return bytes(data)


def _symlink(filename: str) -> Callable[[Path], None]:
    def write(landing: Path) -> None:
        outside = landing.parent.parent / "outside"
        outside.mkdir(parents=True, exist_ok=True)
        secret = outside / "secret.csv"
        secret.write_bytes(_csv(_house()))
        os.symlink(secret, landing / filename)

    return write


def _copy_of(good: str, filename: str) -> Callable[[Path], None]:
    """The good file of the same batch, landed again under another name."""

    def write(landing: Path) -> None:
        shutil.copyfile(landing / good, landing / filename)

    return write


def _case(
    name: str, pipeline: str, filename: str, data: Callable[[], bytes], reason: str, **kw: str
) -> BadInput:
    return BadInput(name, pipeline, filename, _bytes(filename, data), reason, **kw)


def corpus() -> list[BadInput]:
    """Every bad input, in a fixed order; each one is generated fresh when written."""
    h, c = "housing", "churn"
    return [
        # --- files that cannot be read -----------------------------------------------------------
        _case("empty_csv", h, "empty.csv", lambda: b"", "the file is empty (0 bytes)"),
        _case(
            "empty_parquet_settled_upload", c, "upload.parquet", lambda: b"", "the file is empty (0 bytes)"
        ),
        _case("zero_byte_still_uploading", c, "upload.parquet.part", lambda: b"", "", outcome="skipped"),
        _case("header_only_csv", h, "header_only.csv", lambda: _csv(_house().iloc[:0]), "no data rows"),
        _case(
            "header_only_parquet",
            c,
            "header_only.parquet",
            lambda: _parquet(_cust().iloc[:0]),
            "no data rows",
        ),
        _case(
            "wrong_delimiter", h, "semicolons.csv", lambda: _csv(_house(), sep=";"), "';' as the delimiter"
        ),
        _case("tab_delimiter", h, "tabs.csv", lambda: _csv(_house(), sep="\t"), "a tab as the delimiter"),
        _case("truncated_csv_row", h, "truncated.csv", _truncated_row, "has 3 fields, the header has 9"),
        _case(
            "latin1_encoding",
            h,
            "latin1.csv",
            lambda: _house().assign(neighborhood="café").to_csv(index=False).encode("latin-1"),
            "is not UTF-8 text (byte 0xe9",
        ),
        _case(
            "utf8_bom",
            h,
            "bom.csv",
            lambda: b"\xef\xbb\xbf" + _csv(_house()),
            "remove the byte-order mark",
        ),
        _case(
            "utf16_encoding",
            h,
            "utf16.csv",
            lambda: _house().to_csv(index=False).encode("utf-16"),
            "UTF-16 byte-order mark",
        ),
        _case(
            "truncated_parquet",
            c,
            "truncated.parquet",
            lambda: _parquet(_cust())[:1500],
            "truncated or corrupt Parquet file",
        ),
        _case("corrupt_parquet_footer", c, "corrupt.parquet", _corrupt_footer, "cannot be read as parquet"),
        _case("csv_named_parquet", c, "really_csv.parquet", lambda: _csv(_cust()), "not a Parquet file"),
        _case(
            "png_named_parquet",
            c,
            "image.parquet",
            lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
            "not a Parquet file",
        ),
        _case(
            "parquet_named_csv", h, "really_parquet.csv", lambda: _parquet(_house()), "binary data, not CSV"
        ),
        _case("wide_row", h, "wide.csv", _wide_row, "has 5009 fields, the header has 9"),
        _case(
            "schema_change_halfway",
            h,
            "schema_change.csv",
            _schema_change,
            "line 32 has 10 fields, the header has 9",
        ),
        # --- readable, but the columns are wrong --------------------------------------------------
        _case(
            "missing_target_column",
            h,
            "no_price.csv",
            lambda: _csv(_house().drop(columns=["price"])),
            "missing required column(s) price",
        ),
        _case(
            "missing_id_column",
            c,
            "no_id.parquet",
            lambda: _parquet(_cust().drop(columns=["customer_id"])),
            "missing required column(s) customer_id",
        ),
        _case(
            "missing_suite_column",
            c,
            "no_age.parquet",
            lambda: _parquet(_cust().drop(columns=["age"])),
            "missing column(s) age",
        ),
        _case(
            "unexpected_extra_column",
            h,
            "extra.csv",
            lambda: _csv(_house().assign(agent_notes="call back")),
            "unexpected extra column(s) agent_notes",
        ),
        _case(
            "renamed_column",
            h,
            "renamed.csv",
            lambda: _csv(_house().rename(columns={"sqft": "square_feet"})),
            "sqft missing and unexpected column(s) square_feet found (renamed?)",
        ),
        # --- wrong types --------------------------------------------------------------------------
        _case(
            "strings_in_numeric_csv",
            h,
            "strings.csv",
            lambda: _csv(_mutate(_house(), "sqft", "unknown", seed=1)),
            "column sqft should hold numbers",
        ),
        _case(
            "numbers_stored_as_text_parquet",
            c,
            "text_numbers.parquet",
            lambda: _parquet(_cust().astype({"tenure_months": str})),
            "column tenure_months is stored as object text",
        ),
        _case(
            "numeric_overflow",
            h,
            "overflow.csv",
            lambda: _csv(_mutate(_house(), "bedrooms", "99999999999999999999999", seed=2, share=0.05)),
            "too large for a 64-bit number",
        ),
        _case(
            "mixed_types",
            h,
            "mixed.csv",
            lambda: _csv(_mutate(_mutate(_house(), "bathrooms", "two", seed=3), "bathrooms", 2.5, seed=4)),
            "column bathrooms should hold numbers",
        ),
        # --- readable, typed, but the values break the contract -----------------------------------
        _case(
            "nulls_beyond_tolerance",
            h,
            "null_prices.csv",
            lambda: _csv(_mutate(_house(), "price", np.nan, seed=5, share=0.3)),
            "price: expect_column_values_to_not_be_null",
        ),
        _case(
            "null_ids_parquet",
            c,
            "null_ids.parquet",
            lambda: _parquet(_mutate(_cust().astype({"customer_id": float}), "customer_id", np.nan, seed=6)),
            "customer_id: expect_column_values_to_not_be_null",
        ),
        _case(
            "values_out_of_range",
            h,
            "negative_distance.csv",
            lambda: _csv(_mutate(_house(), "distance_km", -5.0, seed=7)),
            "distance_km: expect_column_values_to_be_between",
        ),
        _case(
            "unseen_category",
            c,
            "lifetime_contract.parquet",
            lambda: _parquet(_mutate(_cust(), "contract", "lifetime", seed=8, share=0.1)),
            "contract: expect_column_values_to_be_in_set",
        ),
        _case(
            "duplicate_ids",
            h,
            "duplicate_ids.csv",
            lambda: _csv(_mutate(_house(), "house_id", 10_003, seed=9, share=0.1)),
            "house_id: expect_column_values_to_be_unique",
        ),
        _case(
            "timestamps_in_future_csv",
            h,
            "future.csv",
            lambda: _csv(_future(_house(), "listed_at")),
            "column listed_at has timestamp(s) in the future",
        ),
        _case(
            "timestamps_in_future_parquet",
            c,
            "future.parquet",
            lambda: _parquet(_future(_cust(), "event_time")),
            "column event_time has timestamp(s) in the future",
        ),
        _case(
            "unparseable_timestamps",
            h,
            "next_tuesday.csv",
            lambda: _csv(_mutate(_house(), "listed_at", "next tuesday", seed=10, share=0.05)),
            "unparseable timestamp(s), e.g. 'next tuesday'",
        ),
        _case(
            "single_class_target",
            c,
            "nobody_churned.parquet",
            lambda: _parquet(_cust().assign(churned=0)),
            "target churned holds a single class",
        ),
        _case(
            "single_row",
            h,
            "one_row.csv",
            lambda: _csv(_house().iloc[:1]),
            "table: expect_table_row_count_to_be_between",
        ),
        _case(
            "unicode_filename_with_spaces",
            h,
            "Prix maison été 2026 ünïcode.csv",
            lambda: _csv(_mutate(_house(), "age_years", 900, seed=11)),
            "age_years: expect_column_values_to_be_between",
        ),
        # --- landing-zone hazards -----------------------------------------------------------------
        BadInput(
            "symlink_outside_landing",
            h,
            "link.csv",
            _symlink("link.csv"),
            "is a symbolic link to",
        ),
        BadInput(
            "same_file_twice", c, "again.parquet", _copy_of("good.parquet", "again.parquet"), "", "duplicate"
        ),
    ]
