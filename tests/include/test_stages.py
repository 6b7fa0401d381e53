"""Library errors are translated at the seam of each stage (issue 10), and nothing else is."""

from __future__ import annotations

import errno

import pandas as pd
import pytest

from include.mlops.errors import DataError, ServiceUnavailable, StageFailed
from include.mlops.stages import library_of, stage


def test_a_library_error_becomes_a_deterministic_stage_failure():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(StageFailed) as err, stage("train", "churn"):
        LogisticRegression().fit(pd.DataFrame({"x": ["a", "b"]}), [0, 1])
    message = str(err.value)
    assert err.value.deterministic and err.value.library in ("sklearn", "numpy", "pandas")
    assert message.startswith("pipeline churn: train stage failed in ")
    assert "could not convert string to float" in message and "\n" not in message
    assert isinstance(err.value.__cause__, ValueError)  # the original stays in the chain


def test_a_library_exception_class_is_recognised_by_its_package():
    with pytest.raises(StageFailed, match="pandas: ParserError"), stage("ingest", "p"):
        raise pd.errors.ParserError("Error tokenizing data\n" + "x" * 5000)


def test_long_library_messages_are_cut_to_one_line():
    with pytest.raises(StageFailed) as err, stage("score", "p"):
        pd.DataFrame({"a": [1]}).astype({"a": "int64"}).set_index("a").loc[["x" * 3000, "y\nz"]]
    assert len(str(err.value)) < 500 and "\n" not in str(err.value)


def test_our_own_bugs_and_errors_pass_unchanged():
    with pytest.raises(KeyError), stage("drift", "p"):
        {}["missing"]
    original = DataError("bad file")
    with pytest.raises(DataError) as err, stage("drift", "p"):
        raise original
    assert err.value is original


def test_transient_failures_stay_retryable():
    with pytest.raises(ServiceUnavailable), stage("score", "p"):
        raise ConnectionResetError(errno.ECONNRESET, "reset by peer")
    with pytest.raises(MemoryError), stage("train", "p"):
        raise MemoryError()


def test_library_of_looks_at_the_raising_frame():
    try:
        pd.Series([1, 2]).astype("definitely-not-a-dtype")
    except TypeError as exc:
        assert library_of(exc) == "pandas"
    try:
        raise ValueError("ours")
    except ValueError as exc:
        assert library_of(exc) is None
