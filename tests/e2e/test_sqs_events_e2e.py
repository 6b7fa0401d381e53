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
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.mlops.data.ledger import Ledger
from include.mlops.datagen import write_batch
from include.mlops.spec import find_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.backends]

PIPELINE = "sqsland"
INGEST, TRAIN = f"{PIPELINE}__ingest", f"{PIPELINE}__train"
ASSET = f"mlops.{PIPELINE}.landed"
TIMEOUT = 600
CONN = "mlops_e2e_aws"  # defined by tests/e2e/conftest.py's moto_aws fixture


def _aws(service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=os.environ["MLOPS_E2E_MOTO_URL"], region_name="us-east-1")


@pytest.fixture
def notified() -> dict[str, str]:
    """A bucket whose ObjectCreated notifications go to a fresh standard queue."""
    s3, sqs = _aws("s3"), _aws("sqs")
    bucket = f"sqsland-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"{bucket}-landed")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rules = [{"Name": "prefix", "Value": f"landing/{PIPELINE}/"}]
    config = {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [config]}
    )
    return {"bucket": bucket, "queue": queue_url}


@pytest.fixture
def sqsland(api, notified):
    """Add the pipeline to the stack; remove it afterwards (its watcher goes too)."""
    folder = Path(os.environ["MLOPS_PIPELINES_DIR"])
    raw = yaml.safe_load((folder / "churn.yaml").read_text(encoding="utf-8"))
    bucket = notified["bucket"]
    raw["name"] = PIPELINE
    raw["description"] = "churn, ingested when S3 notifies an upload through SQS"
    raw["data"].pop("schedule", None)
    raw["data"].update(
        landing=f"s3://{bucket}/landing/{PIPELINE}",
        archive=f"s3://{bucket}/archive/{PIPELINE}",
        quarantine=f"s3://{bucket}/quarantine/{PIPELINE}",
        trigger="event",
        landing_conn_id=CONN,
        settle_seconds=60,  # far above the one 2 s look an uploaded object needs
        events={"queue": notified["queue"], "suffix": ".parquet"},
    )
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
        found = [a for a in api.assets(ASSET) if a["name"] == ASSET and a["watchers"]]
        if found:
            return found[0]
        time.sleep(2)
    raise AssertionError(f"no watcher registered on {ASSET} within {TIMEOUT}s")


def _in_queue(queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = _aws("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


def test_an_upload_to_s3_starts_one_ingest_run_through_the_sqs_watcher(api, sqsland, notified):
    api.wait_for_dags([INGEST, TRAIN])
    api.pause(TRAIN)  # this test stops at ingestion
    api.unpause(INGEST)
    asset = _watcher(api)
    assert asset["watchers"][0]["name"] == f"{PIPELINE}__landing_sqs"
    # The watcher receives (and deletes) the s3:TestEvent sent when the notification was set.
    deadline = time.monotonic() + TIMEOUT
    while _in_queue(notified["queue"]) and time.monotonic() < deadline:
        time.sleep(1)
    assert _in_queue(notified["queue"]) == 0, "the watcher does not receive from the queue"
    before = api.run_ids(INGEST)
    assert before == set()  # the TestEvent started nothing (no schedule: MLOPS_DISABLE_SCHEDULES=1)

    landed = time.monotonic()
    uri = write_batch(sqsland, "batch-1", rows=1500, seed=5, dataset="churn")  # temp name, then copy
    run = api.wait_new_run(INGEST, before, timeout=TIMEOUT)
    states = {t["task_id"]: t["state"] for t in api.task_instances(INGEST, run["dag_run_id"])}
    print(f"upload to published: {time.monotonic() - landed:.1f}s")
    assert run["state"] == "success", states
    assert run["run_type"] == "asset_triggered"
    assert api.xcom(INGEST, run["dag_run_id"], "discover") == [uri]
    events = [e for e in api.asset_events(asset["id"]) if e["extra"].get("from_trigger")]
    [payload] = [e["extra"]["payload"] for e in events]  # the temporary name fired nothing
    assert payload["source"] == "sqs" and payload["queue"] == notified["queue"]
    assert [f["uri"] for f in payload["files"]] == [uri]
    assert {e.uri: (e.state, e.outcome) for e in Ledger().entries(PIPELINE)} == {uri: ("done", "published")}
    listed = _aws("s3").list_objects_v2(Bucket=notified["bucket"], Prefix=f"landing/{PIPELINE}/")
    assert listed.get("KeyCount", 0) == 0  # archived: the landing zone is empty
    assert api.run_ids(INGEST) - before == {run["dag_run_id"]}
