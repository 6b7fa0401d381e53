"""S3 event notifications through SQS start ingestion: the spec, the watcher trigger, the DAG.

moto's server on 127.0.0.1 plays S3, SQS and SNS: a bucket's notification configuration sends
``s3:ObjectCreated:*`` to a queue (directly, or through an SNS topic), as on AWS, and moto sends
the ``s3:TestEvent`` AWS sends when the configuration is set. The trigger under test is the real
``S3EventQueueTrigger`` running the amazon provider's ``SqsSensorTrigger`` and ``SqsHook``
(aiobotocore) through the ``aws_default`` connection, given as ``AIRFLOW_CONN_AWS_DEFAULT`` with
moto's ``endpoint_url``. Nothing of the provider is mocked.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.mlops.errors import SpecError
from include.mlops.spec import load_spec
from mlops_airflow.triggers.s3_events import S3EventQueueTrigger, s3_records
from tests.moto_fixtures import in_queue, moto_server, notified_queue, use_moto
from tests.plugins.trigger_stream import TriggerStream

pytestmark = pytest.mark.backends

PREFIX = "landing/churn"
SHIPPED = Path(__file__).resolve().parents[2] / "include" / "pipelines"
TIMEOUT = 30  # seconds: the most a test waits for one event (each receive waits 1 s)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, monkeypatch) -> str:
    """``aws_default`` points at moto, as a deployment would set it (no AWS_* credentials around)."""
    use_moto(monkeypatch, "aws_default", moto_url)
    return moto_url


@dataclass
class Landing:
    """A bucket whose ObjectCreated notifications go to a queue, written with the providers' hooks."""

    bucket: str
    queue_url: str
    s3: Any
    sqs: Any

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def put(self, key: str, data: bytes = b"a,b\n1,2\n") -> dict[str, Any]:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        return {"size": head["ContentLength"], "etag": head["ETag"].strip('"')}

    def in_queue(self) -> int:
        """Messages still in the queue, visible or being received."""
        return in_queue(self.sqs, self.queue_url)


def _clients() -> tuple[Any, Any, Any]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sns import SnsHook
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    return S3Hook().get_conn(), SqsHook().get_conn(), SnsHook().get_conn()


def make_landing(*, via_sns: bool = False) -> Landing:
    """Bucket, queue (and topic), and the bucket's notification configuration, as on AWS."""
    s3, sqs, sns = _clients()
    bucket, name = f"landing-{uuid.uuid4().hex[:8]}", f"landed-{uuid.uuid4().hex[:8]}"
    queue_url = notified_queue(s3, sqs, bucket, name, sns=sns if via_sns else None)
    return Landing(bucket, queue_url, s3, sqs)


def make_trigger(landing: Landing, **kwargs: Any) -> S3EventQueueTrigger:
    return S3EventQueueTrigger(
        pipeline="churn",
        landing=landing.uri,
        queue=landing.queue_url,
        wait_seconds=1,
        retry_after=0.05,
        **kwargs,
    )


class Watch(TriggerStream):
    """Drives a trigger's event stream the way the triggerer does, one event at a time."""

    def __init__(self, trigger: S3EventQueueTrigger) -> None:
        super().__init__(trigger, timeout=TIMEOUT)

    async def drained(self, landing: Landing) -> None:
        """Until the trigger received (and deleted) every message, firing nothing for them."""
        future = self.next_event()
        for _ in range(TIMEOUT * 20):
            if future.done() or await asyncio.to_thread(landing.in_queue) == 0:
                break
            await asyncio.sleep(0.05)
        assert not future.done(), f"unexpected event: {future.result().payload}"
        assert await asyncio.to_thread(landing.in_queue) == 0


def expected(landing: Landing, *files: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": "success",
        "pipeline": "churn",
        "landing": landing.uri,
        "source": "sqs",
        "queue": landing.queue_url,
        "count": len(files),
        "files": [
            {"uri": f"s3://{landing.bucket}/{key}", "event": "ObjectCreated:Put", **head}
            for key, head in files
        ],
    }


# The trigger, against moto's S3 -> SQS notifications ---------------------------------------------
def test_an_upload_under_the_landing_prefix_fires_exactly_its_event_and_nothing_else_does(aws):
    landing = make_landing()

    async def scenario() -> None:
        watch = Watch(make_trigger(landing, suffix=".csv"))
        try:
            assert landing.in_queue() == 1  # the s3:TestEvent sent when the notification was set
            # None of these is a new file of the pipeline.
            landing.put("other/batch-0.csv")  # outside the prefix
            landing.put(f"{PREFIX}/nested/batch-0.csv")  # in a sub-folder: not landed here
            landing.put(f"{PREFIX}-old/batch-0.csv")  # a prefix that only starts the same
            landing.put(f"{PREFIX}/batch-0.csv.part")  # a writer's temporary name
            landing.put(f"{PREFIX}/.batch-0.csv")
            landing.put(f"{PREFIX}/batch-0.csv._SUCCESS", b"")  # a marker
            landing.put(f"{PREFIX}/notes.txt")  # not the suffix
            await watch.drained(landing)

            head = landing.put(f"{PREFIX}/batch-1.csv", b"a,b\n1,2\n3,4\n")
            assert await watch.event() == expected(landing, (f"{PREFIX}/batch-1.csv", head))
            # S3 URL-encodes keys in notifications; the event names the object itself.
            head = landing.put(f"{PREFIX}/batch 2 (copy).csv")
            assert await watch.event() == expected(landing, (f"{PREFIX}/batch 2 (copy).csv", head))
            await watch.drained(landing)
        finally:
            await watch.close()

    asyncio.run(scenario())


def test_a_burst_of_uploads_fires_events_naming_each_file_once(aws):
    landing = make_landing()
    keys = [f"{PREFIX}/batch-{i}.csv" for i in range(25)]
    heads = {f"s3://{landing.bucket}/{key}": landing.put(key) for key in keys}

    async def scenario() -> list[dict]:
        watch = Watch(make_trigger(landing))
        seen: list[dict] = []
        try:
            while {f["uri"] for f in seen} != set(heads):
                seen += (await watch.event())["files"]
            await watch.drained(landing)
        finally:
            await watch.close()
        return seen

    seen = asyncio.run(scenario())
    assert all(f["etag"] == heads[f["uri"]]["etag"] and f["size"] == heads[f["uri"]]["size"] for f in seen)
    assert len(seen) == len(heads)  # each file once: messages are deleted when received


def test_notifications_fanned_out_through_sns_are_unwrapped(aws):
    landing = make_landing(via_sns=True)

    async def scenario() -> dict:
        watch = Watch(make_trigger(landing))
        try:
            await watch.drained(landing)  # the TestEvent, in an SNS envelope
            head = landing.put(f"{PREFIX}/batch-1.csv")
            return {"head": head, "payload": await watch.event()}
        finally:
            await watch.close()

    got = asyncio.run(scenario())
    assert got["payload"] == expected(landing, (f"{PREFIX}/batch-1.csv", got["head"]))


def test_a_missing_queue_is_logged_and_the_watcher_recovers_once_it_exists(aws, capsys):
    landing = make_landing()
    name = f"later-{uuid.uuid4().hex[:8]}"
    missing = landing.queue_url.rsplit("/", 1)[0] + f"/{name}"
    warning = "Cannot receive S3 notifications for pipeline churn"

    async def scenario() -> dict:
        trigger = S3EventQueueTrigger(
            pipeline="churn", landing=landing.uri, queue=missing, wait_seconds=1, retry_after=0.05
        )
        watch, logged = Watch(trigger), ""
        try:
            future = watch.next_event()
            for _ in range(TIMEOUT * 20):
                logged += capsys.readouterr().out  # the trigger logs through structlog to stdout
                if logged.count(warning) >= 2 or future.done():
                    break
                await asyncio.sleep(0.05)
            assert logged.count(warning) >= 2 and "NonExistentQueue" in logged  # failed, and tried again
            assert not future.done()  # still watching
            url = landing.sqs.create_queue(QueueName=name)["QueueUrl"]
            body = {"Records": [_record(landing.bucket, f"{PREFIX}/late.csv")]}
            landing.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
            return await watch.event()
        finally:
            await watch.close()

    payload = asyncio.run(scenario())
    assert [f["uri"] for f in payload["files"]] == [f"s3://{landing.bucket}/{PREFIX}/late.csv"]


def _record(bucket: str, key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3, "eTag": "abc"}},
    }


def test_message_shapes_s3_sns_eventbridge_and_test_events():
    s3 = json.dumps({"Records": [_record("b", "landing/churn/a+b%281%29.csv")]})
    want = [
        {
            "event": "ObjectCreated:Put",
            "bucket": "b",
            "key": "landing/churn/a b(1).csv",
            "size": 3,
            "etag": "abc",
        }
    ]
    assert s3_records(s3) == want
    assert s3_records(json.dumps({"Type": "Notification", "Message": s3})) == want
    bridge = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {
            "bucket": {"name": "b"},
            "object": {"key": "landing/churn/a b(1).csv", "size": 3, "etag": "abc"},
        },
    }
    assert s3_records(json.dumps(bridge)) == [{**want[0], "event": "Object Created"}]
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Bucket": "b",
        "Time": "2024-01-01T00:00:00Z",
    }
    assert s3_records(json.dumps(test_event)) == []
    assert s3_records("not json") == [] and s3_records("[1, 2]") == []
    removed = json.dumps({"Records": [_record("b", "landing/churn/a.csv", "ObjectRemoved:Delete")]})
    trigger = S3EventQueueTrigger(pipeline="churn", landing="s3://b/landing/churn", queue="q")
    assert trigger.event_for([{"Body": removed}, {"Body": json.dumps(test_event)}], trigger.landing) is None
    assert trigger.event_for([{"Body": s3}], trigger.landing).payload["count"] == 1


def test_the_trigger_round_trips_through_serialisation_and_is_a_valid_watcher(monkeypatch):
    """What the triggerer does: import the classpath, build it from the kwargs (primitives only)."""
    from airflow.sdk import AssetWatcher
    from airflow.sdk.module_loading import import_string
    from airflow.serialization.encoders import encode_trigger
    from airflow.triggers.base import BaseEventTrigger

    trigger = S3EventQueueTrigger(
        pipeline="churn",
        landing="s3://acme/{LANDING_PREFIX}",  # templates expand in the triggerer, not here
        queue="https://sqs.eu-west-1.amazonaws.com/123456789012/churn-landing",
        aws_conn_id="landing_aws",
        suffix=".parquet",
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.triggers.s3_events.S3EventQueueTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs) and rebuilt is not trigger
    assert encode_trigger(rebuilt)["classpath"] == classpath
    assert BaseEventTrigger.hash(*rebuilt.serialize()) == BaseEventTrigger.hash(*trigger.serialize())
    assert AssetWatcher(name="w", trigger=rebuilt).trigger is rebuilt
    monkeypatch.setenv("LANDING_PREFIX", "landing/churn")
    sqs = rebuilt.sqs_trigger()  # the provider's trigger, built in the triggerer
    assert type(sqs).__module__ == "airflow.providers.amazon.aws.triggers.sqs"
    assert (sqs.sqs_queue, sqs.aws_conn_id, sqs.region_name) == (kwargs["queue"], "landing_aws", "eu-west-1")
    assert sqs.delete_message_on_reception and rebuilt.landing_uri == "s3://acme/landing/churn"


# The spec and the DAG ------------------------------------------------------------------------------
def write_spec(pipelines_dir: Path, data: dict[str, Any], name: str = "churn") -> Path:
    raw = yaml.safe_load((SHIPPED / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = name
    raw["data"] = {k: v for k, v in raw["data"].items() if k not in ("schedule", "trigger")}
    raw["data"].update(data)
    path = pipelines_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/churn-landing"
SQS = {"landing": "s3://acme-landing/churn", "trigger": "event", "events": {"queue": QUEUE}}


def test_the_spec_takes_an_sqs_source_with_defaults(pipelines_dir):
    spec = load_spec(write_spec(pipelines_dir, SQS))
    events = spec.data.events
    assert events is not None and (events.source, events.queue, events.wait_seconds) == ("sqs", QUEUE, 20)
    assert events.aws_conn_id is None and events.region is None and events.suffix is None
    assert spec.data.schedule == "@daily"  # a sweep: catches files whose notification was missed
    spec = load_spec(write_spec(pipelines_dir, {**SQS, "schedule": None}))
    assert spec.data.schedule is None  # an explicit null turns the sweep off
    spec = load_spec(write_spec(pipelines_dir, {"landing": "s3://acme/churn", "trigger": "event"}))
    assert spec.data.events is None and spec.data.schedule is None  # the polling watcher, as before


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {**SQS, "trigger": "schedule"},
            "data: events: S3 notifications start ingestion only with trigger: event",
        ),
        (
            {**SQS, "landing": "{MLOPS_DATA_ROOT}/landing/churn"},
            "is not s3://; use an s3:// landing, or drop events",
        ),
        (
            {**SQS, "events": {"queue": "arn:aws:sqs:eu-west-1:123456789012:churn"}},
            "data.events.queue: 'arn:aws:sqs:eu-west-1:123456789012:churn' is an ARN; give the queue URL",
        ),
        (
            {**SQS, "events": {"queue": "https://sqs.eu-west-1.amazonaws.com/churn"}},
            "data.events.queue: 'https://sqs.eu-west-1.amazonaws.com/churn' is not an SQS queue URL",
        ),
        (
            {**SQS, "events": {"queue": QUEUE + ".fifo"}},
            "cannot be sent to a FIFO queue (churn-landing.fifo); use a standard queue",
        ),
        (
            {**SQS, "events": {"queue": "{NO_SUCH_QUEUE_VAR}"}},
            "uses {NO_SUCH_QUEUE_VAR} but the environment variable NO_SUCH_QUEUE_VAR is not set",
        ),
        (
            {**SQS, "events": {"queue": QUEUE, "region": "us-east-1"}},
            "region 'us-east-1' differs from the queue URL's region 'eu-west-1'",
        ),
        (
            {**SQS, "events": {"queue": QUEUE, "region": "Europe"}},
            "data.events.region: 'Europe' is not an AWS region",
        ),
        (
            {**SQS, "events": {"queue": QUEUE, "suffix": "x/.csv"}},
            "data.events.suffix: 'x/.csv' must be the end of a file name",
        ),
        (
            {**SQS, "events": {"queue": QUEUE, "wait_seconds": 30}},
            "data.events.wait_seconds: Input should be less than or equal to 20",
        ),
        (
            {**SQS, "events": {"queue": QUEUE, "source": "pubsub"}},
            "data.events.source: Input should be 'sqs'",
        ),
        ({**SQS, "events": {"queue": QUEUE, "topic": "x"}}, "data.events.topic: unknown field"),
    ],
)
def test_a_bad_sqs_source_is_one_line_naming_the_file_and_field(pipelines_dir, data, message):
    path = write_spec(pipelines_dir, data)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert message in text and text.startswith(f"{path}: ") and "\n" not in text, text


def landed_asset(dag: Any) -> Any:
    """The one Asset an ingest DAG is scheduled on (alone, or with the time sweep)."""
    from airflow.sdk import Asset

    condition = dag.timetable.asset_condition
    if isinstance(condition, Asset):
        return condition
    [asset] = condition.iter_assets().values()
    return asset


def test_the_ingest_dag_is_scheduled_on_the_sqs_watcher(pipelines_dir, monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule

    from mlops_airflow.factory import build_dags

    monkeypatch.delenv("MLOPS_DISABLE_SCHEDULES", raising=False)
    data = {**SQS, "landing_conn_id": "landing_aws", "events": {"queue": QUEUE, "suffix": ".parquet"}}
    dag = build_dags(load_spec(write_spec(pipelines_dir, data)))["churn__ingest"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)  # the watcher, or the daily sweep
    asset = landed_asset(dag)
    assert asset.name == "mlops.churn.landed"
    [watcher] = asset.watchers
    assert watcher.name == "churn__landing_sqs"
    assert watcher.trigger.serialize() == (
        "mlops_airflow.triggers.s3_events.S3EventQueueTrigger",
        {
            "pipeline": "churn",
            "landing": "s3://acme-landing/churn",
            "queue": QUEUE,
            "aws_conn_id": "landing_aws",  # the landing's connection, unless events.aws_conn_id is set
            "region": None,  # from the queue URL, in the triggerer
            "suffix": ".parquet",
            "wait_seconds": 20,
            "retry_after": 30,
        },
    )
    assert [t.task_id for t in dag.tasks] == ["discover", "validate", "announce", "all_files_valid"]

    monkeypatch.setenv("MLOPS_DISABLE_SCHEDULES", "1")  # demo, e2e: no sweep, the watcher stays
    polling = {"landing": "s3://acme-landing/churn", "trigger": "event"}
    dags = build_dags(load_spec(write_spec(pipelines_dir, SQS)))
    asset = landed_asset(dags["churn__ingest"])
    assert asset.watchers[0].trigger.serialize()[0].endswith("S3EventQueueTrigger")
    asset = landed_asset(build_dags(load_spec(write_spec(pipelines_dir, polling)))["churn__ingest"])
    assert asset.watchers[0].name == "churn__landing"
    assert asset.watchers[0].trigger.serialize()[0] == "mlops_airflow.triggers.landing.LandingFileTrigger"


def test_dag_parsing_with_an_sqs_source_loads_no_provider_client(tmp_path, pipelines_dir):
    from tests.dags.test_dag_integrity import parse_dags

    write_spec(pipelines_dir, SQS)
    parsed = parse_dags(tmp_path, MLOPS_PIPELINES_DIR=str(pipelines_dir))
    assert parsed["import_errors"] == {}
    assert parsed["heavy"] == []  # neither boto3 nor botocore: the provider's trigger loads in the triggerer
    schedule = parsed["dags"]["churn__ingest"]["schedule"]
    assert "AssetWatcher(name='churn__landing_sqs'" in schedule
    assert "mlops_airflow.triggers.s3_events.S3EventQueueTrigger" in schedule
