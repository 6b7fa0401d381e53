"""The processed-file ledger on Postgres: the same semantics as on SQLite, and claims exactly once
when several processes (workers on different hosts) claim the same files at the same moment."""

from __future__ import annotations

import multiprocessing

import pytest

from include.mlops.data.landing import LandedFile
from include.mlops.data.ledger import Ledger
from tests.include import test_ledger as on_sqlite

pytestmark = pytest.mark.production

FORK = multiprocessing.get_context("fork")
STALE = 3600.0


@pytest.fixture
def ledger(pg_url) -> Ledger:
    return Ledger(pg_url)


# Every semantic test of the SQLite ledger, run again on Postgres.
SEMANTICS = [
    on_sqlite.test_a_retry_of_the_same_run_reclaims_its_own_files,
    on_sqlite.test_done_files_are_never_returned_again,
    on_sqlite.test_a_stale_claim_is_taken_over_and_the_dead_run_cannot_finish_it,
    on_sqlite.test_renewing_a_claim_keeps_it_live,
    on_sqlite.test_a_relanded_file_with_new_content_is_new,
    on_sqlite.test_one_live_claim_per_uri_whatever_its_version,
    on_sqlite.test_release_returns_files_to_the_pool,
    on_sqlite.test_pipelines_do_not_share_claims,
]


@pytest.mark.parametrize("case", SEMANTICS, ids=[c.__name__.removeprefix("test_") for c in SEMANTICS])
def test_the_ledger_keeps_its_semantics_on_postgres(case, ledger):
    case(ledger)


def _landed(i: int) -> LandedFile:
    return LandedFile(uri=f"s3://landing/p/f{i:03d}.csv", size=10, modified=0.0, token="etag")


def _claim_at_once(url: str, run_id: str, barrier, out) -> None:
    ledger = Ledger(url)
    files = [_landed(i) for i in range(80)]
    ledger.pending("p", files, stale_after=STALE)  # connected and schema checked before the start
    barrier.wait()
    out.put((run_id, [f.uri for f in ledger.claim("p", files, run_id, stale_after=STALE)]))


def test_workers_claiming_the_same_files_at_the_same_moment_get_each_file_once(ledger):
    for attempt in range(3):  # three rounds of four claimers; each round on new file names
        pipeline_files = [_landed(i) for i in range(80)]
        barrier, out = FORK.Barrier(4), FORK.Queue()
        procs = [
            FORK.Process(target=_claim_at_once, args=(ledger.url, f"run-{attempt}-{i}", barrier, out))
            for i in range(4)
        ]
        for proc in procs:
            proc.start()
        results = dict(out.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
        claimed = [uri for uris in results.values() for uri in uris]
        if attempt == 0:
            assert sorted(claimed) == sorted(f.uri for f in pipeline_files)  # each file exactly once
            assert {e.run_id for e in ledger.entries("p")} == {r for r, uris in results.items() if uris}
        else:
            assert claimed == []  # held by the first round's runs (live claims)
        assert len(ledger.entries("p")) == 80


def _finish_or_take_over(url: str, role: str, barrier, out) -> None:
    ledger = Ledger(url)
    file = _landed(0)
    ledger.pending("p", [file], stale_after=STALE)
    barrier.wait()
    if role == "owner":
        out.put((role, ledger.finish("p", file.uri, "slow-run", "published")))
    else:
        out.put((role, [f.uri for f in ledger.claim("p", [file], "new-run", stale_after=0.0)]))


def test_a_takeover_never_undoes_a_finish_that_committed_meanwhile(ledger):
    for _ in range(5):
        ledger.release_run("p", "new-run")
        file = _landed(0)
        ledger.claim("p", [file], "slow-run", stale_after=STALE)
        barrier, out = FORK.Barrier(2), FORK.Queue()
        procs = [
            FORK.Process(target=_finish_or_take_over, args=(ledger.url, r, barrier, out))
            for r in ("owner", "taker")
        ]
        for proc in procs:
            proc.start()
        results = dict(out.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(timeout=30)
        [entry] = ledger.entries("p")
        if results["owner"]:  # the finish won: the file is done and the takeover did not get it
            assert (entry.state, entry.run_id) == ("done", "slow-run") and results["taker"] == []
        else:  # the takeover won: the dead run's finish was refused
            assert (entry.state, entry.run_id) == ("claimed", "new-run") and results["taker"] == [file.uri]
        if entry.state == "done":
            return
