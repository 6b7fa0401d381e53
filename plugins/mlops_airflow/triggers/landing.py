"""Event-driven ingestion: watch a landing zone (``file://``, ``s3://``, ``gs://``) from the triggerer.

``LandingFileTrigger`` polls the landing URI asynchronously and fires a ``TriggerEvent`` listing the
files that are complete (``include.mlops.data.landing``: a marker, older than ``settle_seconds``, or
unchanged between two of its listings ``STABLE_SECONDS`` apart) and not yet processed or being
processed (``include.mlops.data.ledger``). While a file is settling it lists again after
``STABLE_SECONDS`` rather than ``poll_interval``, so a file renamed into place is announced a few
seconds after it is first seen. It is used two ways:

- as an ``AssetWatcher`` (``watch=True``): it runs for as long as the ingest DAG is active and
  fires once per batch of newly complete files; a file it announced is not announced again while
  it stays pending, unless ``reannounce_after`` seconds pass without any run claiming it;
- by ``LandingFileSensor`` (``watch=False``): it fires once, with every ready file, and ends.

A watcher never dies on a listing error: a store outage or a connection being fixed must not end
the AssetWatcher. Each failed listing is a warning; after ``FAILURES_BEFORE_ERROR`` failures in a
row (and every as many after that) it is an error naming the reason and what to check (the bucket
or folder, the connection's credentials, the connection being defined), since a misconfiguration
fails on every poll for good. A successful listing resets the count.

Listing goes through ``mlops_airflow.hooks.landing`` (the providers' hooks, imported inside its
functions), so this module stays cheap: the triggerer imports it by classpath and DAG parsing
imports it for the watcher, and neither loads boto3 or google.cloud here.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from include.mlops.data import landing
from include.mlops.data.landing import LandedFile
from include.mlops.errors import one_line
from mlops_airflow.hooks.landing import default_conn_id, list_landing

if TYPE_CHECKING:
    from include.mlops.data.ledger import Ledger
    from include.mlops.spec import PipelineSpec

MAX_FILES_PER_EVENT = 100  # an Asset event carries the payload in its extra: keep it small
FAILURES_BEFORE_ERROR = 5  # failed listings in a row before a watcher logs an error (and every 5 after)


class LandingFileTrigger(BaseEventTrigger):
    """Fire when complete, unprocessed files are in a pipeline's landing zone.

    :param pipeline: pipeline name (the ledger key).
    :param landing: landing URI; ``{VAR}`` templates are expanded in the triggerer.
    :param conn_id: Airflow connection; default ``aws_default`` (s3) / ``google_cloud_default`` (gs).
    :param settle_seconds: a file counts as complete once unmodified for this long, or once two
        listings ``STABLE_SECONDS`` apart saw it unchanged, or once a ``_SUCCESS`` marker covers it.
    :param poll_interval: seconds between listings.
    :param claim_timeout: a claim not renewed for this long belongs to a dead run.
    :param reannounce_after: announce a pending file again if no run claimed it for this long.
    :param watch: keep watching after an event (AssetWatcher); False fires once (sensor).
    """

    def __init__(
        self,
        *,
        pipeline: str,
        landing: str,
        conn_id: str | None = None,
        settle_seconds: int = 30,
        poll_interval: float = 30,
        claim_timeout: int = 21600,
        reannounce_after: float = 600,
        watch: bool = True,
    ) -> None:
        """Store primitives only: the triggerer rebuilds the trigger from ``serialize()``'s kwargs."""
        super().__init__()
        self.pipeline = pipeline
        self.landing = landing
        self.conn_id = conn_id
        self.settle_seconds = settle_seconds
        self.poll_interval = poll_interval
        self.claim_timeout = claim_timeout
        self.reannounce_after = reannounce_after
        self.watch = watch
        self._clock: Callable[[], float] = time.time  # tests replace it
        self._first_seen: dict[tuple[str, str], float] = {}  # (uri, token) -> first listed at
        self._settling = 0  # files listed last time that are not complete yet
        self._failures = 0  # listings failed in a row

    @classmethod
    def for_spec(
        cls,
        spec: PipelineSpec,
        *,
        watch: bool,
        landing: str | None = None,
        conn_id: str | None = None,
        settle_seconds: int | None = None,
        poll_interval: float | None = None,
    ) -> LandingFileTrigger:
        """The trigger for a pipeline's landing zone, from its spec's ``data`` (overrides win)."""
        data = spec.data
        return cls(
            pipeline=spec.name,
            landing=landing or data.landing,
            conn_id=conn_id or data.landing_conn_id,
            settle_seconds=data.settle_seconds if settle_seconds is None else settle_seconds,
            poll_interval=poll_interval or data.poll_interval,
            claim_timeout=data.claim_timeout,
            watch=watch,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: the watcher's identity (its hash) and how the triggerer rebuilds it."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pipeline": self.pipeline,
                "landing": self.landing,
                "conn_id": self.conn_id,
                "settle_seconds": self.settle_seconds,
                "poll_interval": self.poll_interval,
                "claim_timeout": self.claim_timeout,
                "reannounce_after": self.reannounce_after,
                "watch": self.watch,
            },
        )

    @property
    def landing_uri(self) -> str:
        """The landing URI with ``{VAR}`` expanded here, in the triggerer's environment."""
        from include.mlops.paths import expand

        return expand(self.landing)

    async def list_files(self) -> list[LandedFile]:
        """One listing of the landing zone (a seam the tests wrap to count polls)."""
        return await list_landing(self.landing_uri, self.conn_id)

    @cached_property
    def ledger(self) -> Ledger:
        """The landing ledger, opened lazily: only the triggerer needs it, never DAG parsing."""
        from include.mlops.data.ledger import Ledger

        return Ledger()

    async def ready_files(self) -> tuple[list[LandedFile], list[LandedFile]]:
        """``(complete, pending)``: pending = complete and no run processed or is processing it.

        Remembers when each file version was first listed, so that the next call can take a file
        that did not change in between (``landing.ready_reason``).
        """
        files = await self.list_files()
        now = self._clock()
        self._first_seen = landing.observe(self._first_seen, files, now)
        ready, young = landing.split_ready(files, now, self.settle_seconds, first_seen=self._first_seen)
        self._settling = len(young)
        if not ready:
            return [], []
        pending = await asyncio.to_thread(
            self.ledger.pending, self.pipeline, ready, stale_after=self.claim_timeout, now=now
        )
        return ready, pending

    def _event(self, files: list[LandedFile], landing_uri: str) -> TriggerEvent:
        shown = files[:MAX_FILES_PER_EVENT] if self.watch else files
        return TriggerEvent(
            {
                "status": "success",
                "pipeline": self.pipeline,
                "landing": landing_uri,
                "count": len(files),
                "files": [f.to_dict() for f in shown],
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until files are ready; a watcher keeps going, a sensor's trigger fires once and ends."""
        announced: dict[tuple[str, str], float] = {}  # (uri, token) -> when it was last announced
        while True:
            try:
                landing_uri = self.landing_uri
                ready, pending = await self.ready_files()
            except Exception as exc:
                if not self.watch:
                    yield TriggerEvent({"status": "error", "pipeline": self.pipeline, "message": str(exc)})
                    return
                # A watcher must outlive a store outage or a connection being fixed: log and keep polling.
                self._listing_failed(exc)
                await asyncio.sleep(self.poll_interval)
                continue
            if self._failures >= FAILURES_BEFORE_ERROR:
                self.log.info("The landing zone of pipeline %s lists again", self.pipeline)
            self._failures = 0
            now = self._clock()
            # Forget files that are gone. While a run holds a file (or it is done), restart its clock:
            # if the run releases it (a failure other than validation), it is announced again only
            # after reannounce_after, so a file that keeps failing does not start a run every poll.
            listed, free = {f.key for f in ready}, {f.key for f in pending}
            announced = {key: at for key, at in announced.items() if key in listed}
            announced.update((key, now) for key in listed - free)
            fresh = [f for f in pending if now - announced.get(f.key, -math.inf) >= self.reannounce_after]
            if fresh:
                announced.update((f.key, now) for f in fresh)
                self.log.info(
                    "%d complete file(s) landed for pipeline %s: %s",
                    len(fresh),
                    self.pipeline,
                    [f.name for f in fresh[:20]],
                )
                yield self._event(fresh, landing_uri)
                if not self.watch:
                    return
            await asyncio.sleep(self.next_poll_in())

    def _listing_failed(self, exc: Exception) -> None:
        """A warning per failed listing; an error with what to fix once they keep failing."""
        self._failures += 1
        reason = one_line(f"{type(exc).__name__}: {exc}", 300)
        if self._failures % FAILURES_BEFORE_ERROR:
            self.log.warning(
                "Cannot list the landing zone of pipeline %s (%s): %s; retrying in %ss",
                self.pipeline,
                self.landing,
                reason,
                self.poll_interval,
            )
            return
        self.log.error(
            "The landing zone of pipeline %s (%s) failed %d listings in a row: %s. %s; "
            "the watcher keeps polling every %ss and no file is ingested until this is fixed",
            self.pipeline,
            self.landing,
            self._failures,
            reason,
            self._what_to_check(),
            self.poll_interval,
        )

    def _what_to_check(self) -> str:
        """What a person should look at for this landing zone's listings to succeed."""
        scheme = self.landing.partition("://")[0]
        if scheme == "file":
            return "Check that the folder exists and that the triggerer can read it"
        conn_id = default_conn_id(self.landing, self.conn_id)
        return (
            f"Check that the bucket and prefix exist and that connection {conn_id!r} is defined "
            f"(Admin > Connections, or AIRFLOW_CONN_{str(conn_id).upper()}) with credentials "
            "allowed to list them"
        )

    def next_poll_in(self) -> float:
        """``poll_interval``, or less while files are settling: their second look is due sooner."""
        if self._settling:
            return min(self.poll_interval, landing.STABLE_SECONDS)
        return self.poll_interval
