"""List a pipeline's landing zone (``file://``, ``s3://``, ``gs://``) through the providers' hooks.

Shared by the trigger (in the triggerer, asynchronously), the sensor and the ingest DAG's discover
task (in a worker, synchronously), so that all three see the same files with the same version
tokens. S3 goes through the amazon provider's ``S3Hook`` (aiobotocore client), GCS through the
google provider's ``GCSAsyncHook``, local folders through ``os.scandir`` in a thread. The hooks are
imported inside the functions: importing this module never loads boto3 or google.cloud, so the
trigger module that imports it stays cheap for the triggerer and for DAG parsing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from include.mlops.data import landing
from include.mlops.data.landing import LandedFile
from include.mlops.errors import SpecError

T = TypeVar("T")
DEFAULT_CONN_IDS = {"s3": "aws_default", "s3a": "aws_default", "gs": "google_cloud_default"}


def default_conn_id(landing_uri: str, conn_id: str | None = None) -> str | None:
    """The connection used for a landing URI: the spec's ``landing_conn_id``, else per scheme."""
    return conn_id or DEFAULT_CONN_IDS.get(landing_uri.partition("://")[0])


async def list_landing(landing_uri: str, conn_id: str | None = None) -> list[LandedFile]:
    """Files directly under ``landing_uri``, with their size, modification time and version token."""
    scheme = landing_uri.partition("://")[0]
    if scheme == "file":
        return await asyncio.to_thread(landing.scan_local, landing_uri.removeprefix("file://"))
    if scheme in ("s3", "s3a"):
        return await _list_s3(landing_uri, default_conn_id(landing_uri, conn_id))
    if scheme == "gs":
        return await _list_gcs(landing_uri, default_conn_id(landing_uri, conn_id))
    raise SpecError(
        f"landing {landing_uri!r} cannot be watched: event-driven ingestion supports file://, s3:// "
        "and gs:// landing URIs; use data.trigger: schedule for other stores"
    )


async def _list_s3(landing_uri: str, conn_id: str | None) -> list[LandedFile]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    _, bucket, prefix = landing.split_bucket(landing_uri)
    files = []
    async with await S3Hook(aws_conn_id=conn_id).get_async_conn() as client:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        async for page in pages:
            files += [
                landing.s3_object(bucket, o) for o in page.get("Contents", []) if not o["Key"].endswith("/")
            ]
    return files


async def _list_gcs(landing_uri: str, conn_id: str | None) -> list[LandedFile]:
    from aiohttp import ClientSession
    from airflow.providers.google.cloud.hooks.gcs import GCSAsyncHook

    _, bucket, prefix = landing.split_bucket(landing_uri)
    files = []
    params = {"prefix": prefix, "delimiter": "/"}
    async with ClientSession() as session:
        client = await GCSAsyncHook(gcp_conn_id=conn_id).get_storage_client(session)
        while True:
            page = await client.list_objects(bucket, params=params)
            files += [
                landing.gcs_object(bucket, o) for o in page.get("items", []) if not o["name"].endswith("/")
            ]
            if not page.get("nextPageToken"):
                return files
            params = {**params, "pageToken": page["nextPageToken"]}


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous task code (in a thread if a loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _connection_defined(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def landing_lister(landing_uri: str, conn_id: str | None = None) -> Callable[[], list[LandedFile]]:
    """A synchronous lister for worker code (the DAG's discover task).

    Other schemes than file/s3/gs, and a gs:// landing without ``landing_conn_id`` whose default
    connection is not defined, are listed with fsspec and the environment's credentials, like the
    rest of ingestion reads them.
    """
    scheme = landing_uri.partition("://")[0]
    if scheme not in ("file", *DEFAULT_CONN_IDS) or (
        scheme == "gs" and not conn_id and not _connection_defined(DEFAULT_CONN_IDS["gs"])
    ):
        return lambda: landing.scan(landing_uri)
    return lambda: run_sync(list_landing(landing_uri, conn_id))
