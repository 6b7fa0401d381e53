"""S3 event notifications through SQS start ingestion, through the real triggerer and scheduler.

A pipeline ``sqsland`` (churn, landing on moto's S3, ``data.events`` on an SQS queue) is added to
the running stack's pipelines folder. The bucket's notification configuration sends
``s3:ObjectCreated:*`` to the queue, as on AWS. Its ingest DAG is scheduled on the Asset
``mlops.sqsland.landed``, whose AssetWatcher runs ``S3EventQueueTrigger`` in the triggerer. An
upload must start one ingest run that publishes the file and records it as done in the ledger;
nobody triggers anything, and the landing zone is never listed by a watcher.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

from include.mlops.datagen import write_batch
from tests.e2e.landing_driver import (
    TIMEOUT,
    event_pipeline,
    ingested,
    ledger_outcomes,
    trigger_payloads,
    watched,
)
from tests.moto_fixtures import REGION, in_queue, notified_queue

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.backends]

PIPELINE = "sqsland"
INGEST = f"{PIPELINE}__ingest"
CONN = "mlops_e2e_aws"  # defined by tests/e2e/conftest.py's moto_aws fixture


def _aws(service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=os.environ["MLOPS_E2E_MOTO_URL"], region_name=REGION)


@pytest.fixture
def notified() -> dict[str, str]:
    """A bucket whose ObjectCreated notifications go to a fresh standard queue."""
    bucket = f"sqsland-{uuid.uuid4().hex[:8]}"
    queue = notified_queue(_aws("s3"), _aws("sqs"), bucket, f"{bucket}-landed", prefix=f"landing/{PIPELINE}/")
    return {"bucket": bucket, "queue": queue}


@pytest.fixture
def sqsland(api, notified):
    """Add the pipeline to the stack; remove it afterwards (its watcher goes too)."""
    bucket = notified["bucket"]
    with event_pipeline(
        api,
        PIPELINE,
        "churn, ingested when S3 notifies an upload through SQS",
        landing=f"s3://{bucket}/landing/{PIPELINE}",
        archive=f"s3://{bucket}/archive/{PIPELINE}",
        quarantine=f"s3://{bucket}/quarantine/{PIPELINE}",
        landing_conn_id=CONN,
        settle_seconds=60,  # far above the one 2 s look an uploaded object needs
        events={"queue": notified["queue"], "suffix": ".parquet"},
    ) as spec:
        yield spec


def test_an_upload_to_s3_starts_one_ingest_run_through_the_sqs_watcher(api, sqsland, notified):
    asset = watched(api, PIPELINE)
    assert asset["watchers"][0]["name"] == f"{PIPELINE}__landing_sqs"
    # The watcher receives (and deletes) the s3:TestEvent sent when the notification was set.
    sqs, deadline = _aws("sqs"), time.monotonic() + TIMEOUT
    while in_queue(sqs, notified["queue"]) and time.monotonic() < deadline:
        time.sleep(1)
    assert in_queue(sqs, notified["queue"]) == 0, "the watcher does not receive from the queue"
    before = api.run_ids(INGEST)
    assert before == set()  # the TestEvent started nothing (no schedule: MLOPS_DISABLE_SCHEDULES=1)

    landed = time.monotonic()
    uri = write_batch(sqsland, "batch-1", rows=1500, seed=5, dataset="churn")  # temp name, then copy
    run, claimed = ingested(api, PIPELINE, before)
    print(f"upload to published: {time.monotonic() - landed:.1f}s")
    assert claimed == [uri]
    [payload] = trigger_payloads(api, asset)  # the temporary name fired nothing
    assert payload["source"] == "sqs" and payload["queue"] == notified["queue"]
    assert [f["uri"] for f in payload["files"]] == [uri]
    assert ledger_outcomes(PIPELINE) == {uri: ("done", "published")}
    listed = _aws("s3").list_objects_v2(Bucket=notified["bucket"], Prefix=f"landing/{PIPELINE}/")
    assert listed.get("KeyCount", 0) == 0  # archived: the landing zone is empty
    assert api.run_ids(INGEST) - before == {run["dag_run_id"]}
