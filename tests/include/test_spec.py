from __future__ import annotations

from pathlib import Path

import pytest

from include.mlops.errors import SpecError
from include.mlops.spec import load_spec, load_specs, parse_duration, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def minimal(**overrides):
    spec = {
        "name": "demo",
        "data": {"landing": "/tmp/x", "target": "y", "task": "classification", "id_column": "id"},
        "validation": {"suite": "include/expectations/churn.json"},
        "training": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "evaluation": {"primary_metric": "roc_auc", "thresholds": {"roc_auc": {"min": 0.6}}},
        "inference": {"input": "/tmp/in", "output": "/tmp/out"},
    }
    spec.update(overrides)
    return spec


def test_example_specs_are_valid():
    specs, errors = load_specs(ROOT / "include" / "pipelines")
    assert errors == {}
    assert {s.name for s in specs} == {"churn", "housing"}
    assert {s.data.task for s in specs} == {"classification", "regression"}


def test_every_problem_is_reported_with_file_and_field():
    raw = minimal(name="Bad Name", training={"estimator": "nope", "holdout_fraction": 1.5, "tpyo": 1})
    with pytest.raises(SpecError) as err:
        parse_spec(raw, "pipelines/bad.yaml")
    lines = str(err.value).splitlines()
    assert "pipelines/bad.yaml: name: 'Bad Name' must be lower case" in lines[0]
    assert any(line.startswith("pipelines/bad.yaml: training.estimator:") for line in lines)
    assert any(line.startswith("pipelines/bad.yaml: training.holdout_fraction:") for line in lines)
    assert any("training.tpyo: unknown field" in line for line in lines)


def test_metric_must_fit_the_task():
    raw = minimal(evaluation={"primary_metric": "rmse"})
    with pytest.raises(SpecError, match="evaluation metric 'rmse' does not fit a classification task"):
        parse_spec(raw, "x.yaml")


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML \(line \d+"):
        load_spec(path)


def test_non_local_backend_needs_its_section():
    raw = minimal(training={"estimator": "sklearn.linear_model.LogisticRegression", "backend": "sagemaker"})
    with pytest.raises(SpecError, match="backend 'sagemaker' needs a 'sagemaker:' section"):
        parse_spec(raw, "x.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("12h", 43200), ("1d", 86400), ("2w", 1209600), (90, 90)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_duplicate_pipeline_names_are_an_error(tmp_path):
    src = (ROOT / "include" / "pipelines" / "churn.yaml").read_text()
    (tmp_path / "a.yaml").write_text(src)
    (tmp_path / "b.yaml").write_text(src)
    specs, errors = load_specs(tmp_path)
    assert [s.name for s in specs] == ["churn"]
    assert "already used by" in errors[str(tmp_path / "b.yaml")]


def test_uris_expand_data_root(state):
    spec = parse_spec(
        minimal(data={"landing": "{MLOPS_DATA_ROOT}/landing/demo", "target": "y", "task": "classification"}),
        "x.yaml",
    )
    assert spec.uri("landing") == (state / "data" / "landing" / "demo").as_uri()
    assert spec.uri("quarantine") == (state / "data" / "quarantine" / "demo").as_uri()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"inference": {"input": "/i", "output": "/o", "schedule": "every day"}},
            "inference.schedule: 'every day' is not a cron",
        ),
        (
            {
                "evaluation": {
                    "primary_metric": "roc_auc",
                    "thresholds": {"roc_auc": {"min": 0.9, "max": 0.8}},
                }
            },
            "min (0.9) is greater than max (0.8)",
        ),
        (
            {"evaluation": {"primary_metric": "roc_auc", "thresholds": {"roc_auc": {}}}},
            "a threshold needs min, max or both",
        ),
        ({"monitoring": {"retrain_cooldown": "-5"}}, "monitoring.retrain_cooldown"),
        (
            {
                "training": {
                    "estimator": "sklearn.svm.SVC",
                    "backend": "kubernetes",
                    "kubernetes": {"image": "x"},
                }
            },
            "training.kubernetes.image: 'x' is not a registry-qualified image reference",
        ),
    ],
)
def test_more_rules(overrides, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(minimal(**overrides), "x.yaml")


def test_slice_needs_a_bound():
    raw = minimal(evaluation={"primary_metric": "roc_auc", "slices": [{"column": "c", "metric": "roc_auc"}]})
    with pytest.raises(SpecError, match="slice c/roc_auc needs min, max or both"):
        parse_spec(raw, "x.yaml")


def _data(**fields) -> dict:
    return {"landing": "s3://b/landing", "target": "y", "task": "classification", **fields}


def test_event_driven_ingestion_fields_and_defaults():
    data = parse_spec(minimal(data=_data()), "x.yaml").data
    assert (data.trigger, data.schedule, data.landing_conn_id) == ("schedule", "@hourly", None)
    assert (data.settle_seconds, data.poll_interval, data.claim_timeout) == (30, 30, 21600)
    event = parse_spec(
        minimal(
            data=_data(trigger="event", settle_seconds="2m", claim_timeout="1h", landing_conn_id="s3_in")
        ),
        "x.yaml",
    ).data
    assert (event.schedule, event.settle_seconds, event.claim_timeout) == (None, 120, 3600)
    assert event.landing_conn_id == "s3_in"
    # An explicit schedule with trigger: event is kept: a periodic sweep next to the events.
    assert (
        parse_spec(minimal(data=_data(trigger="event", schedule="@daily")), "x.yaml").data.schedule
        == "@daily"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"trigger": "event", "schedule": "@once"},
            "data: schedule '@once' cannot be combined with trigger: event",
        ),
        ({"trigger": "watch"}, "data.trigger: Input should be 'schedule' or 'event'"),
        ({"settle_seconds": -1}, "data.settle_seconds: must be at least 0 seconds"),
        ({"poll_interval": 0}, "data.poll_interval: must be at least 1 seconds"),
        ({"claim_timeout": "30s"}, "data.claim_timeout: must be at least 60 seconds"),
        ({"settle_seconds": "soon"}, "data.settle_seconds: 'soon' is not a duration"),
    ],
)
def test_event_driven_ingestion_rules(fields, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(minimal(data=_data(**fields)), "x.yaml")
