"""The steps the landing e2e tests share: a file lands, ``<name>__ingest`` runs on the real scheduler.

Each test adds an event-driven variant of churn to the running stack's pipelines folder, waits for
the AssetWatcher of its landing Asset, lands a file and reads back the ingest run it started. Only
what differs (where the file lands, which trigger watches it) stays in the tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from include.mlops.data.ledger import Ledger
from include.mlops.spec import PipelineSpec, find_spec
from tools.airflow_api import AirflowApi

TIMEOUT = 600


@contextmanager
def event_pipeline(api: AirflowApi, name: str, description: str, **data: Any) -> Iterator[PipelineSpec]:
    """Add churn as pipeline ``name`` with ``data.trigger: event`` (and ``data``) to the stack for the
    ``with`` block; remove it afterwards (its watcher goes too)."""
    folder = Path(os.environ["MLOPS_PIPELINES_DIR"])
    raw = yaml.safe_load((folder / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = name
    raw["description"] = description
    raw["data"].pop("schedule", None)
    raw["data"].update(trigger="event", **data)
    raw["inference"].update(
        input=f"{{MLOPS_DATA_ROOT}}/scoring/{name}", output=f"{{MLOPS_DATA_ROOT}}/predictions/{name}"
    )
    raw["registry"] = {"model_name": name}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    try:
        yield find_spec(name)
    finally:
        path.unlink()
        api.pause(f"{name}__ingest")


def watched(api: AirflowApi, name: str) -> dict[str, Any]:
    """Unpause ``<name>__ingest`` (training stays paused: the tests stop at ingestion) and return its
    landing Asset once the watcher is registered (the DAG is parsed, active and unpaused)."""
    ingest, asset = f"{name}__ingest", f"mlops.{name}.landed"
    api.wait_for_dags([ingest, f"{name}__train"])
    api.pause(f"{name}__train")
    api.unpause(ingest)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = [a for a in api.assets(asset) if a["name"] == asset and a["watchers"]]
        if found:
            return found[0]
        time.sleep(2)
    raise AssertionError(f"no watcher registered on {asset} within {TIMEOUT}s")


def ingested(api: AirflowApi, name: str, known: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The next ``<name>__ingest`` run (not in ``known``), finished successfully, and the files its
    discover task claimed."""
    ingest = f"{name}__ingest"
    run = api.wait_new_run(ingest, known, timeout=TIMEOUT)
    states = {t["task_id"]: t["state"] for t in api.task_instances(ingest, run["dag_run_id"])}
    assert run["state"] == "success", states
    assert run["run_type"] == "asset_triggered"
    return run, api.xcom(ingest, run["dag_run_id"], "discover")


def trigger_payloads(api: AirflowApi, asset: dict[str, Any]) -> list[dict[str, Any]]:
    """What the watcher's trigger sent with each event on ``asset`` (events not from a trigger left out)."""
    events = api.asset_events(asset["id"])
    return [e["extra"]["payload"] for e in events if e["extra"].get("from_trigger")]


def ledger_outcomes(name: str) -> dict[str, tuple[str, str | None]]:
    """Each file the ledger knows for pipeline ``name``: its state and outcome."""
    return {e.uri: (e.state, e.outcome) for e in Ledger().entries(name)}
