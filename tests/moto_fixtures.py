"""moto's server and the S3 -> SQS notification set-up the S3 landing tests share.

moto's ``ThreadedMotoServer`` plays S3, SQS and SNS on 127.0.0.1, in a thread of the test process;
the tests reach it through an Airflow ``aws`` connection (the providers' hooks) or boto3 clients
with its ``endpoint_url``. A bucket's notification configuration sends ``s3:ObjectCreated:*`` to a
queue, as on AWS, and moto sends the ``s3:TestEvent`` AWS sends when the configuration is set.
Each test module wraps ``moto_server`` in a fixture of the scope it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

REGION = "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 and a port the OS picks, for the ``with`` block; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aws_connection(endpoint_url: str) -> str:
    """An ``aws`` Airflow connection to moto (test credentials), as ``AIRFLOW_CONN_*`` JSON."""
    extra = {"endpoint_url": endpoint_url, "region_name": REGION}
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra})


def use_moto(monkeypatch: pytest.MonkeyPatch, conn_id: str, endpoint_url: str) -> None:
    """Point connection ``conn_id`` at moto, as a deployment would set it (no AWS_* settings around)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", aws_connection(endpoint_url))
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def notified_queue(
    s3: Any, sqs: Any, bucket: str, queue: str, *, prefix: str | None = None, sns: Any = None
) -> str:
    """Create ``bucket`` and ``queue``; the bucket's ObjectCreated events (under ``prefix``) go to the
    queue, through an SNS topic when an ``sns`` client is given. Returns the queue's URL."""
    s3.create_bucket(Bucket=bucket)
    queue_url: str = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule: dict[str, Any] = {"Events": ["s3:ObjectCreated:*"]}
    if prefix is not None:
        rule["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    if sns is not None:
        topic = sns.create_topic(Name=queue)["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)  # not raw: an SNS envelope
        config = {"TopicConfigurations": [{"TopicArn": topic, **rule}]}
    else:
        config = {"QueueConfigurations": [{"QueueArn": arn, **rule}]}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    return queue_url


def in_queue(sqs: Any, queue_url: str) -> int:
    """Messages still in the queue, visible or being received."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)
