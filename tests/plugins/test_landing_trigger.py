"""LandingFileTrigger and LandingFileSensor against real local stores, through the providers' hooks.

S3 is moto's server and GCS the gcp-storage-emulator, both on 127.0.0.1 and a free port; the
trigger reaches them through Airflow connections given as ``AIRFLOW_CONN_*`` variables (S3: the
amazon provider's ``S3Hook`` with an ``endpoint_url``; GCS: the google provider's ``GCSAsyncHook``
with ``is_anonymous`` and ``STORAGE_EMULATOR_HOST``). The trigger's clock is replaced, so "still
settling" and "settled" are decided without waiting; the trigger polls every few milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from include.mlops.data import landing
from include.mlops.data.ledger import Ledger
from mlops_airflow.hooks.landing import list_landing
from mlops_airflow.sensors.landing import LandingFileSensor
from mlops_airflow.triggers.landing import LandingFileTrigger
from tests.moto_fixtures import moto_server, use_moto
from tests.plugins.trigger_stream import TriggerStream
from tools.stack import free_port

SETTLE = 60  # seconds; the fake clock jumps past it
S3_CONN, GCS_CONN = "landing_s3_test", "landing_gcs_test"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def stores(moto_url, gcs_server, monkeypatch) -> None:
    """Connections (and emulator settings) pointing the providers' hooks at the local servers."""
    use_moto(monkeypatch, S3_CONN, moto_url)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{GCS_CONN.upper()}",
        json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "test-project"}}
        ),
    )
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)


@dataclass
class Zone:
    """A landing zone on one store, written to with that store's own provider hook."""

    landing: str
    conn_id: str | None
    put: Callable[[str, bytes], None]
    delete: Callable[[str], None]


def _local_zone(tmp_path: Path) -> Zone:
    folder = tmp_path / "landing"
    folder.mkdir()

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)

    return Zone(f"file://{folder}", None, put, lambda name: (folder / name).unlink())


def _s3_zone() -> Zone:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook, bucket = S3Hook(aws_conn_id=S3_CONN), f"landing-{uuid.uuid4().hex[:8]}"
    hook.create_bucket(bucket_name=bucket)
    hook.load_bytes(b"not landing", key="other/elsewhere.csv", bucket_name=bucket)  # outside the prefix

    def put(name: str, data: bytes) -> None:
        hook.load_bytes(data, key=f"landing/p/{name}", bucket_name=bucket, replace=True)

    def delete(name: str) -> None:
        hook.delete_objects(bucket=bucket, keys=[f"landing/p/{name}"])

    return Zone(f"s3://{bucket}/landing/p", S3_CONN, put, delete)


def _gcs_zone() -> Zone:
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook, bucket = GCSHook(gcp_conn_id=GCS_CONN), f"landing-{uuid.uuid4().hex[:8]}"
    hook.create_bucket(bucket_name=bucket, project_id="test-project")
    hook.upload(bucket, "landing/p/nested/deeper.csv", data=b"in a sub-folder: not landed here")

    def put(name: str, data: bytes) -> None:
        hook.upload(bucket, f"landing/p/{name}", data=data)

    def delete(name: str) -> None:
        hook.delete(bucket, f"landing/p/{name}")

    return Zone(f"gs://{bucket}/landing/p", GCS_CONN, put, delete)


@pytest.fixture(params=["file", "s3", "gs"])
def zone(request, state, tmp_path) -> Zone:
    if request.param == "file":
        return _local_zone(tmp_path)
    request.getfixturevalue("stores")
    return _s3_zone() if request.param == "s3" else _gcs_zone()


class Clock:
    """The time the test started, plus an offset the test moves forward (a slow poll cannot make a
    file look stable by itself)."""

    def __init__(self) -> None:
        self.base, self.offset = time.time(), 0.0

    def __call__(self) -> float:
        return self.base + self.offset

    def settle(self) -> None:
        self.offset += SETTLE * 2

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Driver(TriggerStream):
    """Runs a trigger's event stream and counts its polls, so a test can say "N polls, no event"."""

    def __init__(self, trigger: LandingFileTrigger, clock: Clock) -> None:
        self.trigger, self.polls = trigger, 0
        trigger._clock = clock
        listing = trigger.list_files

        async def counted():
            files = await listing()
            self.polls += 1
            return files

        trigger.list_files = counted  # type: ignore[method-assign]
        super().__init__(trigger, timeout=60)

    async def quiet_for(self, polls: int = 3) -> None:
        """Let the trigger complete ``polls`` more polls and check that it fired nothing."""
        future, target = self.next_event(), self.polls + polls + 1  # poll N ends before N+1 starts

        async def polled() -> None:
            while self.polls < target and not future.done():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(polled(), timeout=60)
        assert not future.done(), f"unexpected event: {future.result() if not future.exception() else ''}"


def make_trigger(zone: Zone, *, watch: bool = True, **kwargs) -> LandingFileTrigger:
    return LandingFileTrigger(
        pipeline="p",
        landing=zone.landing,
        conn_id=zone.conn_id,
        settle_seconds=SETTLE,
        poll_interval=0.01,
        claim_timeout=3600,
        watch=watch,
        **kwargs,
    )


def names(payload: dict) -> list[str]:
    return sorted(Path(f["uri"]).name for f in payload["files"])


def run(coro):
    return asyncio.run(coro)


# The trigger -------------------------------------------------------------------------------------
def test_a_complete_file_fires_and_a_settling_or_temporary_one_does_not_until_complete(zone):
    clock = Clock()

    async def scenario() -> None:
        driver = Driver(make_trigger(zone), clock)
        try:
            zone.put("batch-1.csv", b"a,b\n1,2\n")  # just written: still settling
            zone.put("batch-2.csv.part", b"a,b\n")  # a temporary name: never complete
            await driver.quiet_for(3)
            clock.settle()
            payload = await driver.event()
            assert payload["status"] == "success" and payload["pipeline"] == "p"
            assert names(payload) == ["batch-1.csv"] and payload["count"] == 1
            [fired] = payload["files"]
            assert fired["uri"] == f"{zone.landing}/batch-1.csv" and fired["size"] == 8
            # batch-1 stays pending (no run claimed it yet): it is not announced again.
            await driver.quiet_for(3)
            # The writer finishes batch-2: renames it (on object stores: writes the final name).
            # Only batch-2 is announced: batch-1 is still pending, and was announced already.
            zone.put("batch-2.csv", b"a,b\n3,4\n")
            zone.delete("batch-2.csv.part")
            clock.settle()
            assert names(await driver.event()) == ["batch-2.csv"]
        finally:
            await driver.close()

    run(scenario())


def test_a_file_unchanged_between_two_listings_fires_without_waiting_for_settle_seconds(zone):
    clock = Clock()

    async def scenario() -> None:
        driver = Driver(make_trigger(zone), clock)
        try:
            zone.put("renamed.csv", b"a,b\n1,2\n")  # complete once visible (renamed in, or uploaded)
            await driver.quiet_for(2)  # seen, but not yet twice STABLE_SECONDS apart
            clock.advance(landing.STABLE_SECONDS)  # far below SETTLE
            assert names(await driver.event()) == ["renamed.csv"]
        finally:
            await driver.close()

    run(scenario())


def test_a_marker_makes_a_fresh_file_fire_at_once_and_is_never_announced(zone):
    clock = Clock()

    async def scenario() -> None:
        driver = Driver(make_trigger(zone), clock)
        try:
            zone.put("batch.csv", b"a,b\n1,2\n")
            zone.put("batch.csv._SUCCESS", b"")
            payload = await driver.event()  # the clock never moved
            assert names(payload) == ["batch.csv"] and payload["count"] == 1
        finally:
            await driver.close()

    run(scenario())


def test_the_trigger_looks_again_soon_while_a_file_is_settling(state, tmp_path):
    zone = _local_zone(tmp_path)
    trigger = make_trigger(zone)
    trigger.poll_interval, trigger._clock = 600, Clock()
    assert trigger.next_poll_in() == 600
    zone.put("fresh.csv", b"a,b\n")
    assert run(trigger.ready_files()) == ([], [])
    assert trigger.next_poll_in() == landing.STABLE_SECONDS


def test_a_local_file_that_keeps_growing_does_not_fire(state, tmp_path):
    zone, clock = _local_zone(tmp_path), Clock()
    path = Path(zone.landing.removeprefix("file://")) / "growing.csv"

    async def scenario() -> None:
        driver = Driver(make_trigger(zone), clock)
        try:
            with path.open("wb") as handle:
                for row in range(5):
                    clock.settle()  # time passes, but the writer keeps the mtime fresh
                    handle.write(b"a,b\n" if row == 0 else b"1,2\n")
                    handle.flush()
                    os.utime(path, (clock(), clock()))
                    await driver.quiet_for(1)
            clock.settle()  # the writer is done: after settle_seconds the file is complete
            assert names(await driver.event()) == ["growing.csv"]
        finally:
            await driver.close()

    run(scenario())


def test_files_done_in_the_ledger_never_fire_and_claimed_ones_wait(zone):
    clock = Clock()
    zone.put("done.csv", b"1")
    zone.put("claimed.csv", b"2")
    listed = {f.name: f for f in run(list_landing(zone.landing, zone.conn_id))}
    ledger = Ledger()
    ledger.claim("p", [listed["done.csv"], listed["claimed.csv"]], "run-1", stale_after=3600)
    ledger.finish("p", listed["done.csv"].uri, "run-1", "published")
    clock.settle()

    async def scenario() -> None:
        driver = Driver(make_trigger(zone, reannounce_after=SETTLE), clock)
        try:
            await driver.quiet_for(3)  # both are complete, but one is done and one is held
            zone.put("new.csv", b"3")
            clock.settle()
            assert names(await driver.event()) == ["new.csv"]
            # run-1 fails on claimed.csv for a transient reason and releases it: it is announced
            # again, but only after reannounce_after, so a failing file cannot start a run per poll.
            ledger.release("p", listed["claimed.csv"].uri, "run-1")
            await driver.quiet_for(3)
            clock.offset += SETTLE
            assert names(await driver.event()) == ["claimed.csv", "new.csv"]
        finally:
            await driver.close()

    run(scenario())


def test_a_restarted_trigger_announces_pending_files_again_but_never_done_ones(zone):
    clock = Clock()
    zone.put("pending.csv", b"1")
    zone.put("done.csv", b"2")
    done = next(f for f in run(list_landing(zone.landing, zone.conn_id)) if f.name == "done.csv")
    Ledger().claim("p", [done], "run-1", stale_after=3600)
    Ledger().finish("p", done.uri, "run-1", "duplicate")
    clock.settle()

    async def first_event(trigger: LandingFileTrigger) -> dict:
        driver = Driver(trigger, clock)
        try:
            return await driver.event()
        finally:
            await driver.close()

    # Twice, as after a triggerer restart: the event that started no run may have been lost.
    assert names(run(first_event(make_trigger(zone)))) == ["pending.csv"]
    assert names(run(first_event(make_trigger(zone)))) == ["pending.csv"]


def test_a_relanded_file_with_new_content_fires_again(zone):
    clock = Clock()
    zone.put("batch.csv", b"version 1")
    [first] = [f for f in run(list_landing(zone.landing, zone.conn_id)) if f.name == "batch.csv"]
    Ledger().claim("p", [first], "run-1", stale_after=3600)
    Ledger().finish("p", first.uri, "run-1", "published")
    if zone.landing.startswith("file://"):  # same second on a coarse clock: make the mtime differ
        path = Path(first.uri.removeprefix("file://"))
        os.utime(path, (first.modified + 5, first.modified + 5))
    zone.put("batch.csv", b"version 2, longer")
    clock.settle()

    async def scenario() -> dict:
        driver = Driver(make_trigger(zone), clock)
        try:
            return await driver.event()
        finally:
            await driver.close()

    payload = run(scenario())
    assert names(payload) == ["batch.csv"] and payload["files"][0]["token"] != first.token


def test_a_sensor_trigger_fires_once_and_ends(zone):
    clock = Clock()
    zone.put("a.csv", b"1")
    clock.settle()

    async def scenario() -> list:
        trigger = make_trigger(zone, watch=False)
        trigger._clock = clock
        return [event.payload async for event in trigger.run()]

    [payload] = run(scenario())
    assert names(payload) == ["a.csv"]


def test_a_listing_error_is_an_error_event_for_a_sensor_and_a_warning_for_a_watcher(state, stores):
    broken = Zone(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/landing", S3_CONN, None, None)  # type: ignore[arg-type]

    async def sensor_events() -> list:
        return [e.payload async for e in make_trigger(broken, watch=False).run()]

    [payload] = run(sensor_events())
    assert payload["status"] == "error" and "NoSuchBucket" in payload["message"]

    async def watcher_keeps_polling() -> None:
        driver = Driver(make_trigger(broken), Clock())
        try:
            failures = 0
            original = driver.trigger.ready_files

            async def counted():
                nonlocal failures
                try:
                    return await original()
                except Exception:
                    failures += 1
                    raise

            driver.trigger.ready_files = counted  # type: ignore[method-assign]
            future = driver.next_event()
            while failures < 3:
                await asyncio.sleep(0.01)
            assert not future.done()
        finally:
            await driver.close()

    run(asyncio.wait_for(watcher_keeps_polling(), timeout=60))


def test_an_unsupported_scheme_is_a_clear_error():
    with pytest.raises(Exception, match="supports file://, s3:// and gs://"):
        run(list_landing("ftp://host/landing"))


def test_hooks_and_fsspec_see_the_same_versions(zone, monkeypatch):
    """The DAG lists with the hooks; the core (without Airflow) with fsspec: same tokens."""
    zone.put("a.csv", b"1,2,3")
    if zone.landing.startswith("s3://"):  # s3fs takes the environment's endpoint and keys
        conn = json.loads(os.environ[f"AIRFLOW_CONN_{S3_CONN.upper()}"])
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", conn["extra"]["endpoint_url"])
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    by_hooks = {f.name: f for f in run(list_landing(zone.landing, zone.conn_id))}
    by_fsspec = {f.name: f for f in landing.scan(zone.landing)}
    assert by_hooks["a.csv"] == by_fsspec["a.csv"]


def test_the_trigger_round_trips_through_serialisation(state, tmp_path, monkeypatch):
    """What the triggerer does: import the classpath, build from the kwargs; the rebuilt trigger is
    the same trigger (same serialisation, same watcher hash) and fires the same event."""
    from airflow.sdk.module_loading import import_string
    from airflow.serialization.encoders import encode_trigger
    from airflow.triggers.base import BaseEventTrigger

    zone = _local_zone(tmp_path)
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path))
    trigger = LandingFileTrigger(
        pipeline="p",
        landing="{MLOPS_DATA_ROOT}/landing",  # expanded in the triggerer, not serialised expanded
        conn_id=None,
        settle_seconds=SETTLE,
        poll_interval=0.01,
        claim_timeout=3600,
        reannounce_after=5,
        watch=False,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.triggers.landing.LandingFileTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # primitives only
    rebuilt = import_string(classpath)(**kwargs)
    assert type(rebuilt) is LandingFileTrigger and rebuilt is not trigger
    assert rebuilt.serialize() == (classpath, kwargs)
    assert {k: getattr(rebuilt, k) for k in kwargs} == kwargs
    assert encode_trigger(rebuilt)["classpath"] == classpath
    assert BaseEventTrigger.hash(*rebuilt.serialize()) == BaseEventTrigger.hash(*trigger.serialize())

    zone.put("a.csv", b"1,2")
    zone.put("b.csv.part", b"1")  # not complete: in neither event
    clock = Clock()
    clock.settle()

    async def events(t: LandingFileTrigger) -> list[dict]:
        t._clock = clock
        return [event.payload async for event in t.run()]

    original, again = run(events(trigger)), run(events(rebuilt))
    assert original == again
    assert [names(p) for p in original] == [["a.csv"]]
    assert original[0]["landing"] == zone.landing


# The sensor --------------------------------------------------------------------------------------
def make_sensor(zone: Zone) -> LandingFileSensor:
    return LandingFileSensor(
        task_id="wait_for_files",
        pipeline="churn",
        landing=zone.landing,
        conn_id=zone.conn_id,
        settle_seconds=SETTLE,
        poll_interval=0.01,
        deferrable=True,
    )


@pytest.mark.parametrize("setting", ["True", "False"])
def test_the_sensor_is_deferrable_by_airflows_default_like_the_providers_sensors(setting, monkeypatch):
    """The default is read when the class is defined, as in the providers: reload under each setting."""
    import importlib
    import inspect

    from mlops_airflow.sensors import landing

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", setting)
    sensor = importlib.reload(landing).LandingFileSensor
    try:
        default = inspect.signature(sensor.__init__).parameters["deferrable"].default
        assert default is (setting == "True")
        assert sensor(task_id="s", pipeline="churn").deferrable is default
        assert sensor(task_id="s", pipeline="churn", deferrable=not default).deferrable is (not default)
    finally:
        monkeypatch.undo()
        importlib.reload(landing)


def test_the_sensor_defers_then_returns_what_the_trigger_found(zone, pipelines_dir):
    zone.put("a.csv", b"1")  # still settling: the sensor has to wait
    sensor = make_sensor(zone)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, LandingFileTrigger) and trigger.watch is False
    assert deferred.value.method_name == "execute_complete"
    clock = Clock()
    clock.settle()
    trigger._clock = clock

    async def events() -> list:
        return [e.payload async for e in trigger.run()]

    [payload] = run(events())
    assert sensor.execute_complete({}, payload) == [f"{zone.landing}/a.csv"]


def test_the_sensor_returns_at_once_when_files_are_ready(zone, pipelines_dir):
    zone.put("a.csv", b"1")
    sensor = make_sensor(zone)
    sensor.settle_seconds = 0
    assert sensor.execute({}) == [f"{zone.landing}/a.csv"]
    assert sensor.poke({}).xcom_value == [f"{zone.landing}/a.csv"]


def test_the_sensor_fails_on_an_error_event(pipelines_dir, tmp_path):
    sensor = make_sensor(_local_zone(tmp_path))
    with pytest.raises(Exception, match="watching the landing zone failed: boom"):
        sensor.execute_complete({}, {"status": "error", "message": "boom"})


# The ingest DAG's tasks and the ledger -----------------------------------------------------------
def test_the_ingest_tasks_claim_record_outcomes_and_release_unfinished_files(state, pipelines_dir):
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from include.mlops.datagen import write_batch
    from include.mlops.spec import find_spec
    from mlops_airflow.operators.ingest import (
        AnnounceDatasetsOperator,
        DiscoverLandedFilesOperator,
        ValidateAndPublishOperator,
    )

    spec = find_spec("churn")
    uris = [
        write_batch(spec, "batch-1", rows=300, seed=1),
        write_batch(spec, "batch-2", rows=300, seed=2, id_offset=10_000, malformed_batch=True),
        write_batch(spec, "batch-3", rows=300, seed=3, id_offset=20_000),
    ]
    for uri in uris:  # landed an hour ago: complete
        past = time.time() - 3600
        os.utime(uri.removeprefix("file://"), (past, past))

    class TaskInstance:
        def __init__(self, results: list) -> None:
            self.results = results

        def xcom_pull(self, task_ids: str, default=None) -> list:
            return self.results

    def context(run_id: str, **extra) -> dict:
        return {
            "run_id": run_id,
            "dag": SimpleNamespace(dag_id="churn__ingest"),
            "task": SimpleNamespace(task_id="t"),
            **extra,
        }

    run_1 = context("manual__1")
    assert DiscoverLandedFilesOperator(task_id="discover", pipeline="churn").execute(run_1) == uris
    with pytest.raises(AirflowSkipException, match="no new complete file"):
        DiscoverLandedFilesOperator(task_id="discover", pipeline="churn").execute(context("manual__2"))
    published = ValidateAndPublishOperator(task_id="validate", pipeline="churn", uri=uris[0]).execute(run_1)
    with pytest.raises(AirflowFailException, match="quarantined"):
        ValidateAndPublishOperator(task_id="validate", pipeline="churn", uri=uris[1]).execute(run_1)
    # batch-3's validate task never ran (say its worker died): announce gives it back.
    announce = AnnounceDatasetsOperator(task_id="announce", pipeline="churn", validate_task_id="validate")
    assert announce.execute(context("manual__1", ti=TaskInstance([published]))) == [published]
    states = {Path(e.uri).name: (e.state, e.outcome) for e in Ledger().entries("churn")}
    assert states == {"batch-1.parquet": ("done", "published"), "batch-2.parquet": ("done", "quarantined")}
    assert DiscoverLandedFilesOperator(task_id="discover", pipeline="churn").execute(
        {"run_id": "manual__3"}
    ) == [uris[2]]


def levels_and_events(logs: list[dict]) -> list[tuple[str, str]]:
    return [
        (entry["log_level"], entry["event"]) for entry in logs if entry["log_level"] in ("warning", "error")
    ]


def failed_listings(trigger: LandingFileTrigger) -> list[int]:
    """A one-item list counting the listings of ``trigger`` that raised, kept up to date."""
    failures, listing = [0], trigger.ready_files

    async def counted():
        try:
            return await listing()
        except Exception:
            failures[0] += 1
            raise

    trigger.ready_files = counted  # type: ignore[method-assign]
    return failures


async def watch_until(driver: Driver, done: Callable[[], bool]) -> None:
    """Keep the watcher's stream running until ``done()``; it must not fire or end meanwhile."""
    future = driver.next_event()
    while not done():
        assert not future.done(), "the watcher fired or ended"
        await asyncio.sleep(0.002)


def test_a_watcher_that_keeps_failing_logs_an_error_saying_what_to_fix_and_keeps_polling(state, tmp_path):
    """A landing "folder" that is a file fails every listing for good: after 5 failures in a row an
    error says why and what to check; a listing that works resets the count."""
    import structlog

    path = tmp_path / "landing"
    path.write_text("a file where the landing folder should be")
    trigger = make_trigger(Zone(f"file://{path}", None, None, None))  # type: ignore[arg-type]
    trigger.poll_interval = 0.001
    driver = Driver(trigger, Clock())
    failures = failed_listings(trigger)

    async def scenario() -> list[dict]:
        with structlog.testing.capture_logs() as logs:
            try:
                await watch_until(driver, lambda: failures[0] >= 11)
                path.unlink()
                path.mkdir()  # fixed: the next listing works and resets the count
                await watch_until(driver, lambda: driver.polls >= 1)
                path.rmdir()
                path.write_text("broken again")
                failures[0] = 0
                await watch_until(driver, lambda: failures[0] >= 5)
            finally:
                await driver.close()
        return logs

    logs = run(asyncio.wait_for(scenario(), timeout=60))
    assert any(e["log_level"] == "error" for e in logs), "failed listings in a row logged no error"
    fixed = next(i for i, e in enumerate(logs) if e["log_level"] == "info" and "lists again" in e["event"])
    before, after = levels_and_events(logs[:fixed]), levels_and_events(logs[fixed:])
    five = ["warning"] * 4 + ["error"]  # an error at every 5th failure in a row
    assert [level for level, _ in before][:11] == five + five + ["warning"]
    assert [level for level, _ in after][:5] == five, "the listing that worked did not reset the count"
    error = before[4][1]
    assert error.startswith(f"The landing zone of pipeline p (file://{path}) failed 5 listings in a row: ")
    assert "NotADirectoryError" in error and "Check that the folder exists" in error
    assert "keeps polling" in error and "\n" not in error


@pytest.mark.parametrize(
    "conn_id, reason",
    [(S3_CONN, "NoSuchBucket"), ("landing_undefined_conn", None)],  # None: boto's fallback decides
    ids=["missing-bucket", "unknown-connection"],
)
def test_a_watcher_names_the_s3_misconfiguration_and_the_connection_to_check(
    state, stores, conn_id, reason, monkeypatch
):
    """A missing bucket or a connection that is not defined: the error names the connection to check."""
    import structlog

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        # With keys around, boto's fallback for the undefined connection would try real AWS (no
        # network here: 35 s of retries); without, it gives up at once, as on a host without keys.
        monkeypatch.delenv(name, raising=False)

    landing_uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/landing"
    trigger = make_trigger(Zone(landing_uri, conn_id, None, None))  # type: ignore[arg-type]
    driver = Driver(trigger, Clock())
    failures = failed_listings(trigger)

    async def scenario() -> list[dict]:
        with structlog.testing.capture_logs() as logs:
            try:
                await watch_until(driver, lambda: failures[0] >= 5)
            finally:
                await driver.close()
        return logs

    logs = run(asyncio.wait_for(scenario(), timeout=60))
    error = next((event for level, event in levels_and_events(logs) if level == "error"), None)
    assert error is not None, "5 failed listings in a row logged no error"
    assert error.startswith(f"The landing zone of pipeline p ({landing_uri}) failed 5 listings in a row: ")
    assert reason is None or reason in error, error
    assert f"connection {conn_id!r} is defined" in error and f"AIRFLOW_CONN_{conn_id.upper()}" in error
