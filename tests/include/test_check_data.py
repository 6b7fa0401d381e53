"""``check-data``: what a dataset cannot support is said before training (issue 10)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from include.mlops.cli import main
from include.mlops.data.check_data import check_data, check_frame
from include.mlops.datagen import write_batch
from include.mlops.spec import find_spec


def churn_like(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows),
            "event_time": pd.date_range("2026-01-01", periods=rows, freq="h"),
            "contract": rng.choice(["monthly", "yearly"], rows),
            "tenure": rng.integers(1, 60, rows),
            "churned": rng.integers(0, 2, rows),
        }
    )


def subjects(findings, severity: str) -> set[str]:
    return {f.subject for f in findings if f.severity == severity}


def test_a_fitting_frame_has_no_error(state, pipelines_dir):
    findings = check_frame(find_spec("churn"), churn_like())
    assert not subjects(findings, "error")


def test_target_type_against_the_task(state, pipelines_dir):
    frame = churn_like()
    frame["churned"] = np.random.default_rng(1).normal(size=len(frame))  # continuous, under classification
    [finding] = [f for f in check_frame(find_spec("churn"), frame) if f.subject == "churned"]
    assert finding.severity == "error" and "use regression" in finding.message
    housing = pd.DataFrame({"house_id": [1, 2, 3], "listed_at": ["2026-01-01"] * 3, "price": ["a", "b", "c"]})
    messages = [f.message for f in check_frame(find_spec("housing"), housing) if f.subject == "price"]
    assert any("use classification" in m for m in messages)


def test_rare_classes_keys_slices_and_unusable_columns(state, pipelines_dir):
    frame = churn_like(60)
    frame["churned"] = ["yes"] * 58 + ["no", "maybe"]
    frame.loc[3, "customer_id"] = 2  # repeated id
    frame["notes"] = [f"customer said something long about the service, number {i}" for i in range(60)]
    frame["empty"] = None
    frame = frame.drop(columns=["contract"])  # the churn spec's slice column
    findings = check_frame(find_spec("churn"), frame)
    by_subject = {f.subject: f for f in findings}
    assert by_subject["churned"].severity == "warning" and "'maybe' (1)" in by_subject["churned"].message
    assert by_subject["customer_id"].severity == "error" and "not unique" in by_subject["customer_id"].message
    assert by_subject["notes"].severity == "error" and "free text" in by_subject["notes"].message
    assert by_subject["empty"].severity == "warning"
    assert by_subject["evaluation.slices[0]"].severity == "error"


def test_datetime_listed_as_a_feature_is_an_error(state, pipelines_dir):
    spec = find_spec("churn")
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"features": ["tenure", "signup"]})})
    frame = churn_like()
    frame["signup"] = pd.date_range("2020-01-01", periods=len(frame), freq="D")
    [finding] = [f for f in check_frame(spec, frame) if f.subject == "signup"]
    assert finding.severity == "error" and "date/time" in finding.message


def test_command_line_exit_codes_and_json(state, pipelines_dir, tmp_path, capsys):
    uri = write_batch(find_spec("churn"), "good", rows=400, seed=3)
    assert main(["check-data", "churn", uri]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    frame = churn_like()
    frame["churned"] = frame["churned"] + 0.5
    frame.drop(columns=["customer_id"]).to_csv(bad, index=False)
    assert main(["check-data", "churn", str(bad), "--json"]) == 2
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["errors"] >= 2 and {"data.id_column", "churned"} <= {
        f["subject"] for f in result["findings"]
    }
    assert "error(s) for pipeline churn" in out.err


def test_unreadable_file_is_one_line(state, pipelines_dir, tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(Exception) as err:
        check_data(find_spec("churn"), str(broken))
    assert "broken.parquet" in str(err.value) and "\n" not in str(err.value)
