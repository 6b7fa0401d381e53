"""DAG integrity: every DAG imports, has an owner, tags and a retry policy, and parsing stays cheap.

Parsing runs in a fresh interpreter so that ``sys.modules`` shows exactly what the DAG files pull in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "pandas",
    "numpy",
    "sklearn",
    "scipy",
    "mlflow",
    "great_expectations",
    "evidently",
    "boto3",
    "botocore",
    "kubernetes",
    "pyarrow",
    "google.cloud",
)
STAGES = ("ingest", "train", "evaluate", "promote", "rollback", "inference", "drift")

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sys.argv[2].split(",")
def loaded(name):
    if name == "google.cloud":  # a .pth file pre-creates the empty namespace package; count real modules
        return any(m.startswith("google.cloud.") for m in sys.modules)
    return name in sys.modules
print(json.dumps({
    "dags": {d.dag_id: {"owner": d.owner, "tags": sorted(d.tags), "retries": [t.retries for t in d.tasks],
                        "schedule": repr(d.timetable), "params": sorted(d.params.keys()),
                        "tasks": sorted(t.task_id for t in d.tasks)}
             for d in bag.dags.values()},
    "import_errors": bag.import_errors,
    "heavy": [h for h in heavy if loaded(h)],
}))
"""


def parse_dags(tmp_path: Path, **env: str) -> dict:
    full_env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        **env,
    }
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(ROOT / "dags"), ",".join(HEAVY)],
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return parse_dags(tmp_path_factory.mktemp("parse"))


def test_no_import_errors(parsed):
    assert parsed["import_errors"] == {}


def test_every_pipeline_gets_every_stage(parsed):
    expected = {f"{p}__{s}" for p in ("churn", "housing") for s in STAGES}
    assert set(parsed["dags"]) == expected


def test_owner_tags_and_retry_policy(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert dag["owner"] == "ml-platform", dag_id
        assert "mlops" in dag["tags"] and any(t.startswith("pipeline:") for t in dag["tags"]), dag_id
        assert all(r is not None and r >= 0 for r in dag["retries"]), dag_id


def test_parsing_imports_no_heavy_module(parsed):
    assert parsed["heavy"] == []


def test_stages_are_chained_by_assets_and_ui_params(parsed):
    dags = parsed["dags"]
    assert "mlops.churn.validated" in dags["churn__train"]["schedule"]
    assert "mlops.churn.retrain-requested" in dags["churn__train"]["schedule"]
    assert "mlops.churn.candidate" in dags["churn__evaluate"]["schedule"]
    assert "mlops.churn.approved" in dags["churn__promote"]["schedule"]
    assert dags["churn__rollback"]["params"] == ["to_version"]
    assert dags["churn__promote"]["params"] == ["version"]
    assert dags["churn__inference"]["params"] == ["rescore"]


def test_broken_spec_is_one_import_error_and_others_survive(tmp_path, pipelines_dir):
    (pipelines_dir / "broken.yaml").write_text("name: broken\ndata: {target: y}\n")
    (pipelines_dir / "not_yaml.yaml").write_text("name: [unclosed\n")
    parsed = parse_dags(tmp_path, MLOPS_PIPELINES_DIR=str(pipelines_dir))
    assert len(parsed["import_errors"]) == 1
    message = next(iter(parsed["import_errors"].values()))
    assert f"{pipelines_dir / 'broken.yaml'}: data.landing: Field required" in message
    assert f"{pipelines_dir / 'not_yaml.yaml'}: not valid YAML" in message
    assert {f"churn__{s}" for s in STAGES} <= set(parsed["dags"])
    assert {f"housing__{s}" for s in STAGES} <= set(parsed["dags"])
    assert not any(d.startswith("broken") for d in parsed["dags"])


def test_manual_approval_adds_a_human_in_the_loop_task(tmp_path, pipelines_dir):
    spec = (pipelines_dir / "churn.yaml").read_text().replace("approval: auto", "approval: manual")
    (pipelines_dir / "churn.yaml").write_text(spec)
    parsed = parse_dags(tmp_path, MLOPS_PIPELINES_DIR=str(pipelines_dir))
    assert parsed["import_errors"] == {}
    assert parsed["dags"]["churn__promote"]["tasks"] == ["approve", "promote"]
    assert parsed["dags"]["housing__promote"]["tasks"] == ["promote"]


def test_event_trigger_schedules_ingest_by_a_landing_watcher_and_parsing_stays_cheap(tmp_path, pipelines_dir):
    spec = (pipelines_dir / "churn.yaml").read_text().replace("\ndata:\n", "\ndata:\n  trigger: event\n", 1)
    (pipelines_dir / "churn.yaml").write_text(spec)
    parsed = parse_dags(tmp_path, MLOPS_PIPELINES_DIR=str(pipelines_dir))
    assert parsed["import_errors"] == {}
    assert parsed["heavy"] == []  # the trigger's hooks are imported in the triggerer only
    schedule = parsed["dags"]["churn__ingest"]["schedule"]
    assert schedule.startswith("AssetTriggeredTimetable") and "mlops.churn.landed" in schedule
    assert "AssetWatcher(name='churn__landing'" in schedule
    assert "mlops_airflow.triggers.landing.LandingFileTrigger" in schedule
    assert "mlops.churn.landed" not in parsed["dags"]["housing__ingest"]["schedule"]
    assert parsed["dags"]["churn__ingest"]["tasks"] == ["all_files_valid", "announce", "discover", "validate"]


def test_inference_scores_each_partition_in_a_mapped_task(parsed):
    for pipeline in ("churn", "housing"):
        dag = parsed["dags"][f"{pipeline}__inference"]
        assert dag["tasks"] == ["collect", "partitions", "resolve", "score"]
        assert dag["params"] == ["rescore"]


def test_labels_add_a_performance_check_that_can_request_retraining(parsed):
    assert parsed["dags"]["churn__drift"]["tasks"] == ["check_drift", "check_performance", "request_retrain"]
    assert parsed["dags"]["housing__drift"]["tasks"] == ["check_drift", "request_retrain"]
