"""Event-driven ingestion through the real triggerer and scheduler: a file lands, ingestion starts.

A pipeline ``watched`` (churn with ``data.trigger: event``) is added to the running stack's
pipelines folder. Its ingest DAG is scheduled on the Asset ``mlops.watched.landed``, whose
AssetWatcher runs ``LandingFileTrigger`` in the triggerer. Landing a file must start exactly one
ingest run that processes it and records it as done in the ledger; the next file starts another
run that takes only the new file. Nobody triggers anything by hand.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from include.mlops.datagen import write_batch
from tests.e2e.landing_driver import event_pipeline, ingested, ledger_outcomes, trigger_payloads, watched

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "watched"
INGEST = f"{PIPELINE}__ingest"
SETTLE = 60


@pytest.fixture
def spec(api):
    """Add the event-driven pipeline to the stack; remove it afterwards (its watcher goes too)."""
    with event_pipeline(
        api,
        PIPELINE,
        "churn, ingested when a file lands (event-driven)",
        landing=f"{{MLOPS_DATA_ROOT}}/landing/{PIPELINE}",
        settle_seconds=SETTLE,  # far above what a file written by rename waits
        poll_interval=2,
    ) as spec:
        yield spec


def test_a_landed_file_starts_one_ingest_run_through_the_asset_watcher(api, spec):
    asset = watched(api, PIPELINE)
    assert asset["watchers"][0]["name"] == f"{PIPELINE}__landing"
    before = api.run_ids(INGEST)

    landed = time.monotonic()
    first = write_batch(spec, "batch-1", rows=1500, seed=5, dataset="churn")  # by rename
    run, claimed = ingested(api, PIPELINE, before)
    published = time.monotonic() - landed
    assert claimed == [first]
    # A file renamed into place is complete after one short second look, not after settle_seconds.
    discover = api.task_instance(INGEST, run["dag_run_id"], "discover")
    print(f"landing to published: {published:.1f}s, discover {discover['duration']:.1f}s")
    assert discover["duration"] < SETTLE / 2
    payloads = trigger_payloads(api, asset)
    assert [f["uri"] for f in payloads[0]["files"]] == [first]

    second = write_batch(spec, "batch-2", rows=1500, seed=6, id_offset=100_000, dataset="churn")
    _, claimed = ingested(api, PIPELINE, before | {run["dag_run_id"]})
    assert claimed == [second]

    assert ledger_outcomes(PIPELINE) == {first: ("done", "published"), second: ("done", "published")}
    assert not Path(first.removeprefix("file://")).exists()  # archived, not left to fire again
    assert len(api.run_ids(INGEST) - before) == 2
