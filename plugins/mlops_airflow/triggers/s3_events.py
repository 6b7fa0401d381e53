"""Event-driven ingestion from S3 event notifications delivered through an SQS queue.

``S3EventQueueTrigger`` is the AssetWatcher trigger of a pipeline whose spec sets ``data.events``
(``source: sqs``). In the triggerer it receives the queue's messages with the amazon provider's
``SqsSensorTrigger`` (its ``SqsHook`` aiobotocore client: long-polling ``ReceiveMessage``, then
``DeleteMessageBatch`` of every message received) and fires one ``TriggerEvent`` per batch that
holds at least one new object directly under the pipeline's landing prefix, ending with
``data.events.suffix`` if set. It ignores ``s3:TestEvent``, deletions and other event types,
objects outside the prefix or in sub-folders, temporary names and completion markers (the same
names the landing listing never takes: ``include.mlops.data.landing``). The message shapes it
reads: S3's own notification (``Records``), the same wrapped in an SNS notification (S3 -> SNS ->
SQS fan-out), and EventBridge's ``Object Created`` event.

The event only wakes ``<p>__ingest``: the run's ``discover`` lists the landing zone again and
claims files through the ledger, so a lost or duplicated message loses or repeats nothing
(``docs/ingestion.md``).

Cheap to import (standard library, ``airflow.triggers.base`` and the landing rules): the provider's
trigger and hook, and boto3 with them, are imported in ``sqs_trigger()``, in the triggerer only.
The common-messaging provider's ``MessageQueueTrigger(scheme="sqs")`` resolves to the same
``SqsSensorTrigger`` but loads boto3 when its module is imported, so DAG parsing cannot use it.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from include.mlops.data import landing

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger

    from include.mlops.spec import PipelineSpec

MAX_FILES_PER_EVENT = 100  # an Asset event carries the payload in its extra: keep it small
MAX_MESSAGES = 10  # the most one ReceiveMessage call returns


def s3_records(body: str) -> list[dict[str, Any]]:
    """The object events in one SQS message body, as ``{event, bucket, key, size, etag}``.

    Reads S3 notifications (``Records``; keys are URL-encoded there), S3 notifications wrapped in
    an SNS envelope, and EventBridge ``Object Created`` events; anything else (``s3:TestEvent``,
    unrelated JSON, text) gives no record.
    """
    try:
        message = json.loads(body)
    except ValueError:
        return []
    if not isinstance(message, dict):
        return []
    if message.get("Type") == "Notification" and isinstance(message.get("Message"), str):
        return s3_records(message["Message"])  # S3 -> SNS -> SQS without raw message delivery
    if message.get("source") == "aws.s3" and isinstance(message.get("detail"), dict):
        return _eventbridge_record(message)
    records = message.get("Records")
    return [_s3_record(r) for r in records if _is_s3(r)] if isinstance(records, list) else []


def _is_s3(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("s3"), dict) and "eventName" in record


def _s3_record(record: dict[str, Any]) -> dict[str, Any]:
    obj = record["s3"].get("object", {})
    return {
        "event": record["eventName"],
        "bucket": record["s3"].get("bucket", {}).get("name", ""),
        "key": unquote_plus(obj.get("key", "")),
        "size": obj.get("size"),
        "etag": obj.get("eTag"),
    }


def _eventbridge_record(message: dict[str, Any]) -> list[dict[str, Any]]:
    detail = message["detail"]
    obj = detail.get("object", {})
    return [
        {
            "event": message.get("detail-type", ""),
            "bucket": detail.get("bucket", {}).get("name", ""),
            "key": obj.get("key", ""),  # EventBridge keys are not URL-encoded
            "size": obj.get("size"),
            "etag": obj.get("etag"),
        }
    ]


def is_created(event: str) -> bool:
    """``ObjectCreated:*`` (S3 notifications) or ``Object Created`` (EventBridge)."""
    return event.startswith("ObjectCreated:") or event == "Object Created"


class S3EventQueueTrigger(BaseEventTrigger):
    """Fire when S3 notifications in an SQS queue announce new files in a pipeline's landing zone.

    :param pipeline: pipeline name (shown in the event and the logs).
    :param landing: ``s3://bucket/prefix`` landing URI; ``{VAR}`` templates are expanded in the triggerer.
    :param queue: SQS queue URL (``{VAR}`` templates expanded in the triggerer).
    :param aws_conn_id: Airflow ``aws`` connection the provider's ``SqsHook`` uses.
    :param region: AWS region of the queue; None: the queue URL's region, else the connection's.
    :param suffix: only keys ending with it count (None: any data file name).
    :param wait_seconds: SQS long-polling wait of each ``ReceiveMessage`` call (1-20).
    :param retry_after: seconds before receiving again after an error (queue missing, no access).
    """

    def __init__(
        self,
        *,
        pipeline: str,
        landing: str,
        queue: str,
        aws_conn_id: str | None = "aws_default",
        region: str | None = None,
        suffix: str | None = None,
        wait_seconds: int = 20,
        retry_after: float = 30,
    ) -> None:
        """Store primitives only: the triggerer rebuilds the trigger from ``serialize()``'s kwargs."""
        super().__init__()
        self.pipeline = pipeline
        self.landing = landing
        self.queue = queue
        self.aws_conn_id = aws_conn_id
        self.region = region
        self.suffix = suffix
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after

    @classmethod
    def for_spec(cls, spec: PipelineSpec) -> S3EventQueueTrigger:
        """The watcher of a pipeline whose ``data.events`` names an SQS queue."""
        data, events = spec.data, spec.data.events
        if events is None:
            raise ValueError(f"pipeline {spec.name} has no data.events: watch its landing zone by polling")
        return cls(
            pipeline=spec.name,
            landing=data.landing,
            queue=events.queue,
            aws_conn_id=events.aws_conn_id or data.landing_conn_id or "aws_default",
            region=events.region,
            suffix=events.suffix,
            wait_seconds=events.wait_seconds,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: the watcher's identity (its hash) and how the triggerer rebuilds it."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pipeline": self.pipeline,
                "landing": self.landing,
                "queue": self.queue,
                "aws_conn_id": self.aws_conn_id,
                "region": self.region,
                "suffix": self.suffix,
                "wait_seconds": self.wait_seconds,
                "retry_after": self.retry_after,
            },
        )

    @property
    def queue_url(self) -> str:
        """The queue URL with ``{VAR}`` expanded here, in the triggerer's environment."""
        from include.mlops.paths import expand

        return expand(self.queue)

    @property
    def landing_uri(self) -> str:
        """The landing URI with ``{VAR}`` expanded here, in the triggerer's environment."""
        from include.mlops.paths import expand

        return expand(self.landing)

    def sqs_trigger(self) -> SqsSensorTrigger:
        """The amazon provider's SQS trigger that receives and deletes the messages (boto3 loads here)."""
        from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger

        from include.mlops.spec import LandingEventsSpec

        url = self.queue_url
        return SqsSensorTrigger(
            sqs_queue=url,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region or LandingEventsSpec.queue_region(url),
            max_messages=MAX_MESSAGES,
            wait_time_seconds=self.wait_seconds,
            delete_message_on_reception=True,  # every message: an unrelated one must not come back
        )

    def wanted(self, record: dict[str, Any], bucket: str, prefix: str) -> bool:
        """A new data file directly under the landing prefix (with the suffix, if one is set)."""
        key: str = record["key"]
        name = posixpath.basename(key)
        return (
            is_created(record["event"])
            and record["bucket"] == bucket
            and key == prefix + name
            and bool(name)
            and not landing.is_temporary(name)
            and not landing.is_marker(name)
            and (self.suffix is None or name.endswith(self.suffix))
        )

    def event_for(self, messages: Iterable[dict[str, Any]], landing_uri: str) -> TriggerEvent | None:
        """One event listing the batch's new landing files, or None when none is for this pipeline."""
        _, bucket, prefix = landing.split_bucket(landing_uri)
        files: dict[str, dict[str, Any]] = {}
        ignored = 0
        for message in messages:
            records = s3_records(message.get("Body", ""))
            ignored += not records
            for record in records:
                if not self.wanted(record, bucket, prefix):
                    ignored += 1
                    continue
                uri = f"s3://{bucket}/{record['key']}"
                files[uri] = {
                    "uri": uri,
                    "event": record["event"],
                    "size": record["size"],
                    "etag": record["etag"],
                }
        if ignored:
            self.log.info(
                "Ignored %d notification(s) that announce no new file under %s (test events, other keys or "
                "event types)",
                ignored,
                landing_uri,
            )
        if not files:
            return None
        found = list(files.values())
        self.log.info("%d file(s) landed for pipeline %s: %s", len(found), self.pipeline, list(files)[:20])
        return TriggerEvent(
            {
                "status": "success",
                "pipeline": self.pipeline,
                "landing": landing_uri,
                "source": "sqs",
                "queue": self.queue_url,
                "count": len(found),
                "files": found[:MAX_FILES_PER_EVENT],
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Receive forever: one event per batch of messages that announces new landing files."""
        while True:
            try:
                landing_uri, sqs = self.landing_uri, self.sqs_trigger()
                async with await sqs.hook.get_async_conn() as client:
                    while True:
                        event = self.event_for(await sqs.poke(client=client), landing_uri)
                        if event is not None:
                            yield event
            except Exception as exc:
                # A watcher must outlive a missing queue, a denied call or a connection being fixed.
                self.log.warning(
                    "Cannot receive S3 notifications for pipeline %s from %s: %s; retrying in %ss",
                    self.pipeline,
                    self.queue,
                    exc,
                    self.retry_after,
                )
                await asyncio.sleep(self.retry_after)
