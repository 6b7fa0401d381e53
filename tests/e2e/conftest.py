"""One Airflow stack (scheduler, dag-processor, triggerer, API server) for every e2e test.

Its pipelines folder holds the two shipped example specs and ``gated``: churn with
``registry.approval: manual``, so the human-in-the-loop path runs through the real scheduler too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.moto_fixtures import REGION, aws_connection, moto_server
from tools.airflow_api import AirflowApi
from tools.stack import ADMIN, Stack, free_port

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "pipelines"


def write_pipelines(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ("churn.yaml", "housing.yaml"):
        shutil.copy(SHIPPED / name, folder / name)
    gated = yaml.safe_load((SHIPPED / "churn.yaml").read_text(encoding="utf-8"))
    gated["name"] = "gated"
    gated["description"] = "churn, with promotion waiting for a human approval"
    gated["data"]["landing"] = "{MLOPS_DATA_ROOT}/landing/gated"
    gated["inference"]["input"] = "{MLOPS_DATA_ROOT}/scoring/gated"
    gated["inference"]["output"] = "{MLOPS_DATA_ROOT}/predictions/gated"
    gated["registry"] = {"model_name": "gated", "approval": "manual"}
    gated["evaluation"].pop("slices", None)  # this pipeline is about approval: keep the gate simple
    (folder / "gated.yaml").write_text(yaml.safe_dump(gated, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="session")
def moto_aws() -> Iterator[dict[str, str]]:
    """moto's server (S3, SQS, SNS) on 127.0.0.1 for pipelines that land on S3: the stack reaches it
    through these variables (fsspec) and the ``mlops_e2e_aws`` connection (the providers' hooks)."""
    with moto_server() as url:
        yield {
            "MLOPS_E2E_MOTO_URL": url,
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AIRFLOW_CONN_MLOPS_E2E_AWS": aws_connection(url),
        }


@pytest.fixture(scope="session")
def api(tmp_path_factory, moto_aws):
    root = tmp_path_factory.mktemp("e2e")
    write_pipelines(root / "pipelines")
    saved = dict(os.environ)
    os.environ["MLOPS_PIPELINES_DIR"] = str(root / "pipelines")
    os.environ.update(moto_aws)
    stack = Stack(
        state=root / "state",
        airflow_port=free_port(),
        with_mlflow_ui=False,
        disable_schedules=True,
    )
    os.environ.update(stack.env())
    try:
        stack.up()
        yield AirflowApi(stack.api_url, *ADMIN)
    finally:
        stack.down()
        os.environ.clear()
        os.environ.update(saved)
