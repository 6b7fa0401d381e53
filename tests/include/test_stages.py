"""Library errors are translated at the seam of each stage (issue 10), and nothing else is."""

from __future__ import annotations

import errno
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


# A wrong path is deterministic -------------------------------------------------------------------


def test_a_missing_file_read_by_pyarrow_is_a_deterministic_failure_naming_the_path(tmp_path):
    missing = tmp_path / "landing" / "batch-7.parquet"
    with pytest.raises(StageFailed) as err, stage("score", "churn"):
        pq.read_table(missing)  # pyarrow: the path is in the message only (no filename)
    message = str(err.value)
    assert err.value.deterministic and err.value.stage == "score"
    assert message.startswith("pipeline churn: score stage failed: no such file or folder: ")
    assert str(missing) in message and "\n" not in message
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_a_missing_file_read_by_pandas_names_the_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with (
        pytest.raises(StageFailed, match=f"no such file or folder: {missing}; check the path"),
        stage("ingest", "p"),
    ):
        pd.read_csv(missing)


def test_a_folder_where_a_file_was_expected_and_the_reverse_are_deterministic(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(StageFailed, match=r"a folder where a file was expected: .*folder") as err,
        stage("ingest", "p"),
    ):
        pd.read_csv(tmp_path / "folder")
    assert isinstance(err.value.__cause__, IsADirectoryError)
    with (
        pytest.raises(StageFailed, match=r"a file where a folder was expected: .*file/x\.parquet") as err,
        stage("score", "p"),
    ):
        pq.write_table(pa.table({"a": [1]}), tmp_path / "file" / "x.parquet")
    assert isinstance(err.value.__cause__, NotADirectoryError)


def test_other_os_errors_still_pass_unchanged(tmp_path):
    with pytest.raises(PermissionError), stage("ingest", "p"):
        raise PermissionError(13, "Permission denied", str(tmp_path))


# Library errors found through the exception chain -------------------------------------------------


def singular() -> np.ndarray:
    return np.zeros((2, 2))


def test_an_error_raised_from_a_library_error_is_the_librarys():
    """Our ``raise ... from`` a numpy error: the cause says which library refused the data."""
    with (
        pytest.raises(StageFailed, match="train stage failed in numpy: ValueError: the features") as err,
        stage("train", "p"),
    ):
        try:
            np.linalg.inv(singular())
        except np.linalg.LinAlgError as exc:
            raise ValueError("the features are collinear") from exc
    assert err.value.library == "numpy"


def test_a_c_level_error_raised_while_handling_a_library_error_is_the_librarys():
    """numpy's C code raises a built-in ValueError on our line (no frame of numpy) while a numpy
    error is being handled: found through ``__context__``."""
    with (
        pytest.raises(StageFailed, match="failed in numpy: ValueError: could not convert"),
        stage("train", "p"),
    ):
        try:
            np.linalg.inv(singular())
        except np.linalg.LinAlgError:
            np.array(["a", "b"]).astype(float)


def test_a_ufunc_error_raised_on_our_line_is_recognised_by_its_class():
    with pytest.raises(StageFailed, match="failed in numpy: UFuncTypeError"), stage("score", "p"):
        np.add(np.array(["a"]), np.array([1]))


def test_the_chain_is_not_followed_from_a_third_party_error_or_a_suppressed_context():
    class StoreThrottled(Exception):
        """A service's error (not a library's) raised while handling a library error."""

    with pytest.raises(StoreThrottled), stage("ingest", "p"):
        try:
            pd.read_csv(io.StringIO('a,b\n1,"2'))
        except pd.errors.ParserError:
            raise StoreThrottled("SlowDown") from None
    with pytest.raises(StoreThrottled), stage("ingest", "p"):
        try:
            pd.read_csv(io.StringIO('a,b\n1,"2'))
        except pd.errors.ParserError:
            raise StoreThrottled("SlowDown")  # noqa: B904 - the implicit context is the point
    with pytest.raises(KeyError), stage("ingest", "p"):
        try:
            np.linalg.inv(singular())
        except np.linalg.LinAlgError:
            raise KeyError("ours") from None  # said to be unrelated: not followed


def test_a_c_level_error_with_nothing_chained_passes_unchanged():
    """The documented limit: C code raising a built-in error on our line leaves no trace of numpy."""
    with pytest.raises(ValueError, match="could not be broadcast"), stage("score", "p"):
        np.ones(2) + np.ones(3)
