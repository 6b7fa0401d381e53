"""Issue 10: every message that lists values caps the list and says how many were left out."""

from __future__ import annotations

import pandas as pd
import pytest

from include.mlops import storage
from include.mlops.data import ingest
from include.mlops.data.columns import check_columns
from include.mlops.errors import DataError, ValidationFailed, listed, one_line
from include.mlops.spec import find_spec


def test_listed_caps_and_counts():
    assert listed(["a", "b"]) == "a, b"
    assert listed([]) == ""
    assert (
        listed(f"c{i}" for i in range(10_000)) == "c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, ... and 9,990 more"
    )
    assert listed(range(4), 2, sep="; ") == "0; 1; ... and 2 more"


def test_one_line_flattens_and_cuts():
    assert one_line("a\n  b\tc") == "a b c"
    cut = one_line("x" * 2000, 100)
    assert len(cut) == 100 and cut.endswith("(cut off)")


def test_missing_columns_message_of_a_very_wide_frame_is_short(state, pipelines_dir):
    spec = find_spec("housing")
    frame = pd.DataFrame([[0] * 10_000], columns=[f"c{i}" for i in range(10_000)])
    with pytest.raises(DataError) as err:
        check_columns(frame, spec, name="wide.csv")
    message = str(err.value)
    assert len(message) < 500
    assert "found 10,000 column(s)" in message and "... and 9,990 more" in message


@pytest.mark.slow
def test_ingesting_a_file_with_10000_unexpected_columns_fails_in_one_short_line(state, pipelines_dir):
    spec = find_spec("housing")
    header = ",".join(f"c{i}" for i in range(10_000))
    row = ",".join("1" for _ in range(10_000))
    storage.write_text(storage.join(spec.uri("landing"), "wide.csv"), f"{header}\n{row}\n{row}\n")
    [uri] = ingest.discover(spec)
    with pytest.raises(ValidationFailed) as err:
        ingest.ingest_file(spec, uri)
    message = str(err.value)
    assert len(message) <= 500 or len(message) < 160 + len(
        str(err.value.quarantined_to)
    )  # a very long data root
    assert "\n" not in message and "more" in message and "wide.csv" in message
