"""DAG integrity: every DAG imports, has an owner, tags and a retry policy, and parsing stays cheap.

Parsing runs in a fresh interpreter so that ``sys.modules`` shows exactly what the DAG files pull in.
The failure-semantics checks build the DAGs in this process to reach the operators themselves.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.heavy_modules import heavy_modules

ROOT = Path(__file__).resolve().parents[2]
HEAVY = heavy_modules()  # pyproject.toml's banned-module-level-imports, the one list
STAGES = ("ingest", "train", "evaluate", "promote", "rollback", "inference", "drift")
# Tasks that talk to a service (MLflow, the object store, the landing zone and its ledger): a
# transient failure there must be retried, so each needs retries >= 1.
SERVICE_TASKS = {
    "discover",
    "announce",
    "train",
    "evaluate",
    "promote",
    "rollback",
    "partitions",
    "resolve",
    "score",
    "collect",
    "check_drift",
    "check_performance",
    "request_retrain",
}
# Tasks that run with retries=0 on purpose, and why.
NO_RETRY = {
    "validate": "a bad file fails the same way again; announce gives a transiently failed file back",
    "approve": "a retry would put the question to a person again",
}
LOCAL_TASKS = {"all_files_valid"}  # an EmptyOperator verdict: no service involved

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from tools.heavy_modules import loaded
heavy = sys.argv[2].split(",")
before = {h for h in heavy if loaded(h)}  # Airflow's own imports (fsspec, through airflow.sdk.io)
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "dags": {d.dag_id: {"owner": d.owner, "tags": sorted(d.tags), "retries": [t.retries for t in d.tasks],
                        "task_retries": {t.task_id: t.retries for t in d.tasks},
                        "schedule": repr(d.timetable), "params": sorted(d.params.keys()),
                        "tasks": sorted(t.task_id for t in d.tasks)}
             for d in bag.dags.values()},
    "import_errors": bag.import_errors,
    "heavy": [h for h in heavy if loaded(h) and h not in before],
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


def test_service_tasks_retry_and_only_deliberate_ones_do_not(tmp_path, pipelines_dir):
    spec = (pipelines_dir / "churn.yaml").read_text().replace("approval: auto", "approval: manual")
    (pipelines_dir / "churn.yaml").write_text(spec)  # so that the approval task is checked too
    parsed = parse_dags(tmp_path, MLOPS_PIPELINES_DIR=str(pipelines_dir))
    seen: set[str] = set()
    for dag_id, dag in parsed["dags"].items():
        for task_id, retries in dag["task_retries"].items():
            seen.add(task_id)
            assert task_id in SERVICE_TASKS | set(NO_RETRY) | LOCAL_TASKS, f"{dag_id}.{task_id}: classify it"
            if task_id in SERVICE_TASKS:
                assert retries is not None and retries >= 1, f"{dag_id}.{task_id} talks to a service"
            if task_id in NO_RETRY:
                assert retries == 0, f"{dag_id}.{task_id}: {NO_RETRY[task_id]}"
    assert seen == SERVICE_TASKS | set(NO_RETRY) | LOCAL_TASKS  # every class above is exercised


def built_tasks(spec_name: str) -> list:
    """Every task of one pipeline's DAGs, built in this process."""
    from include.mlops.spec import find_spec
    from mlops_airflow.factory import build_dags

    return [task for dag in build_dags(find_spec(spec_name)).values() for task in dag.tasks]


def probe(task):
    """An instance of ``task``'s operator class (a mapped task gets placeholder mapped arguments)."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from mlops_airflow.operators.base import PipelineOperator

    if not isinstance(task, MappedOperator):
        return task
    cls = task.operator_class
    own = {
        name
        for klass in cls.__mro__
        if issubclass(klass, PipelineOperator) and "__init__" in vars(klass)
        for name in inspect.signature(klass.__init__).parameters
    }
    kwargs = {k: ({} if k == "champion" else v) for k, v in task.partial_kwargs.items() if k in own}
    kwargs.update({name: "probe" for name in task.expand_input.value})
    return cls(task_id=f"{task.task_id}_probe", **kwargs)


def test_every_service_task_fails_without_retry_on_deterministic_errors_and_retries_transient_ones(
    pipelines_dir,
):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from include.mlops.errors import DataError, PromotionRefused, ServiceUnavailable
    from mlops_airflow.operators.base import PipelineOperator

    context = {"run_id": "manual__1", "dag": None, "task": None}
    checked = set()
    for task in built_tasks("churn"):
        if task.task_id not in SERVICE_TASKS:
            continue
        operator = probe(task)
        assert isinstance(operator, PipelineOperator), f"{task.task_id} bypasses the error translation"
        for deterministic in (DataError("bad column"), PromotionRefused("champion moved")):

            def fail(context, exc=deterministic):
                raise exc

            operator.run = fail
            with pytest.raises(AirflowFailException, match=str(deterministic)):
                operator.execute(context)

        def unavailable(context):
            raise ServiceUnavailable("tracking server down")

        operator.run = unavailable
        with pytest.raises(AirflowException, match="server down") as raised:
            operator.execute(context)
        assert not isinstance(raised.value, AirflowFailException), f"{task.task_id} must retry"
        checked.add(task.task_id)
    assert checked == SERVICE_TASKS


def plugin_task_classes() -> list[type]:
    """Every operator, sensor and notifier class defined in the plugins package, found by walking it."""
    from airflow.sdk import BaseNotifier, BaseOperator

    import mlops_airflow

    found = set()
    for info in pkgutil.walk_packages(mlops_airflow.__path__, "mlops_airflow."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseOperator | BaseNotifier) and cls.__module__.startswith("mlops_airflow"):
                found.add(cls)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def conn_id_attributes(cls: type) -> set[str]:
    """Names ending in ``conn_id`` that the class or its project bases take or set on ``self``."""
    names = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("mlops_airflow"):
            continue
        if "__init__" in vars(klass):
            names |= {p for p in inspect.signature(klass.__init__).parameters if p.endswith("conn_id")}
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(klass)))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            names |= {
                t.attr
                for t in targets
                if isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name)
                and t.value.id == "self"
                and t.attr.endswith("conn_id")
            }
    return names


def test_every_conn_id_of_every_plugin_task_class_is_templated():
    classes = plugin_task_classes()
    by_name = {cls.__name__: cls for cls in classes}
    # the walk finds every kind: stage operators, the sensor, the approval operator, the notifier
    assert {
        "TrainModelOperator",
        "LandingFileSensor",
        "PromotionApprovalOperator",
        "PipelineEventNotifier",
    } <= set(by_name)
    assert conn_id_attributes(by_name["LandingFileSensor"]) == {"conn_id"}
    assert conn_id_attributes(by_name["PromotionApprovalOperator"]) == {"mlflow_conn_id"}
    missing = {
        cls.__name__: sorted(conn_id_attributes(cls) - set(cls.template_fields))
        for cls in classes
        if conn_id_attributes(cls) - set(cls.template_fields)
    }
    assert missing == {}, f"connection ids that Jinja cannot template: {missing}"
