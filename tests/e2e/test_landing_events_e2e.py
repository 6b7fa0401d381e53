"""Event-driven ingestion through the real triggerer and scheduler: a file lands, ingestion starts.

A pipeline ``watched`` (churn with ``data.trigger: event``) is added to the running stack's
pipelines folder. Its ingest DAG is scheduled on the Asset ``mlops.watched.landed``, whose
AssetWatcher runs ``LandingFileTrigger`` in the triggerer. Landing a file must start exactly one
ingest run that processes it and records it as done in the ledger; the next file starts another
run that takes only the new file. Nobody triggers anything by hand.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from include.mlops.data.ledger import Ledger
from include.mlops.datagen import write_batch
from include.mlops.spec import find_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "watched"
INGEST, TRAIN = f"{PIPELINE}__ingest", f"{PIPELINE}__train"
ASSET = f"mlops.{PIPELINE}.landed"
TIMEOUT = 600
SETTLE = 60


@pytest.fixture
def watched(api):
    """Add the event-driven pipeline to the stack; remove it afterwards (its watcher goes too)."""
    folder = Path(os.environ["MLOPS_PIPELINES_DIR"])
    raw = yaml.safe_load((folder / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = PIPELINE
    raw["description"] = "churn, ingested when a file lands (event-driven)"
    raw["data"].update(
        landing=f"{{MLOPS_DATA_ROOT}}/landing/{PIPELINE}",
        trigger="event",
        settle_seconds=SETTLE,  # far above what a file written by rename waits
        poll_interval=2,
    )
    raw["data"].pop("schedule", None)
    raw["inference"].update(
        input=f"{{MLOPS_DATA_ROOT}}/scoring/{PIPELINE}", output=f"{{MLOPS_DATA_ROOT}}/predictions/{PIPELINE}"
    )
    raw["registry"] = {"model_name": PIPELINE}
    path = folder / f"{PIPELINE}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    try:
        yield find_spec(PIPELINE)
    finally:
        path.unlink()
        api.pause(INGEST)


def _watcher(api) -> dict:
    """The landing Asset once its watcher is registered (the DAG is parsed, active and unpaused)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assets = api.assets(ASSET)
        found = [a for a in assets if a["name"] == ASSET and a["watchers"]]
        if found:
            return found[0]
        time.sleep(2)
    raise AssertionError(f"no watcher registered on {ASSET} within {TIMEOUT}s")


def _ingested(api, known: set[str]) -> tuple[dict, list[str]]:
    """The next ingest run (not in ``known``), finished, and the files its discover task claimed."""
    run = api.wait_new_run(INGEST, known, timeout=TIMEOUT)
    states = {t["task_id"]: t["state"] for t in api.task_instances(INGEST, run["dag_run_id"])}
    assert run["state"] == "success", states
    return run, api.xcom(INGEST, run["dag_run_id"], "discover")


def test_a_landed_file_starts_one_ingest_run_through_the_asset_watcher(api, watched):
    api.wait_for_dags([INGEST, TRAIN])
    api.pause(TRAIN)  # this test stops at ingestion
    api.unpause(INGEST)
    asset = _watcher(api)
    assert asset["watchers"][0]["name"] == f"{PIPELINE}__landing"
    before = api.run_ids(INGEST)

    landed = time.monotonic()
    first = write_batch(watched, "batch-1", rows=1500, seed=5, dataset="churn")  # by rename
    run, claimed = _ingested(api, before)
    published = time.monotonic() - landed
    assert run["run_type"] == "asset_triggered"
    assert claimed == [first]
    # A file renamed into place is complete after one short second look, not after settle_seconds.
    discover = api.task_instance(INGEST, run["dag_run_id"], "discover")
    print(f"landing to published: {published:.1f}s, discover {discover['duration']:.1f}s")
    assert discover["duration"] < SETTLE / 2
    events = api.asset_events(asset["id"])
    payloads = [e["extra"]["payload"] for e in events if e["extra"].get("from_trigger")]
    assert [f["uri"] for f in payloads[0]["files"]] == [first]

    second = write_batch(watched, "batch-2", rows=1500, seed=6, id_offset=100_000, dataset="churn")
    _, claimed = _ingested(api, before | {run["dag_run_id"]})
    assert claimed == [second]

    outcomes = {e.uri: (e.state, e.outcome) for e in Ledger().entries(PIPELINE)}
    assert outcomes == {first: ("done", "published"), second: ("done", "published")}
    assert not Path(first.removeprefix("file://")).exists()  # archived, not left to fire again
    assert len(api.run_ids(INGEST) - before) == 2
