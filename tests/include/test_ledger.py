"""The processed-file ledger: claims are exclusive, outcomes are final, and both survive restarts."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from include.mlops.data import ingest
from include.mlops.data.landing import LandedFile
from include.mlops.data.ledger import Ledger
from include.mlops.datagen import write_batch
from include.mlops.errors import NothingToDo, SpecError, ValidationFailed
from include.mlops.spec import find_spec

ROOT = Path(__file__).resolve().parents[2]
STALE = 3600.0


def landed(name: str, token: str = "t1") -> LandedFile:
    return LandedFile(uri=f"s3://landing/p/{name}", size=10, modified=0.0, token=token)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite3")


def _claim_in_process(path: str, run_id: str, names: list[str], barrier, out) -> None:
    ledger = Ledger(path)
    barrier.wait()
    out.put(
        (run_id, [f.uri for f in ledger.claim("p", [landed(n) for n in names], run_id, stale_after=STALE)])
    )


def test_two_concurrent_processes_never_claim_the_same_file(ledger):
    names = [f"f{i:03d}.csv" for i in range(60)]
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(str(ledger.path), f"run-{i}", names, barrier, out))
        for i in range(3)
    ]
    for proc in procs:
        proc.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    claimed = [uri for uris in results.values() for uri in uris]
    assert sorted(claimed) == sorted(landed(n).uri for n in names)  # each file exactly once
    assert {e.run_id for e in ledger.entries("p")} == {r for r, uris in results.items() if uris}


def test_a_retry_of_the_same_run_reclaims_its_own_files(ledger):
    files = [landed("a.csv"), landed("b.csv")]
    assert ledger.claim("p", files, "run-1", stale_after=STALE) == files
    assert ledger.claim("p", files, "run-2", stale_after=STALE) == []
    assert ledger.claim("p", files, "run-1", stale_after=STALE) == files
    assert {e.attempts for e in ledger.entries("p")} == {2}


def test_done_files_are_never_returned_again(ledger):
    file = landed("a.csv")
    ledger.claim("p", [file], "run-1", stale_after=STALE)
    assert ledger.finish("p", file.uri, "run-1", "published", detail="datasets/p/abc")
    for run in ("run-1", "run-2"):
        assert ledger.claim("p", [file], run, stale_after=STALE) == []
    assert ledger.claim("p", [file], "run-3", stale_after=0, now=time.time() + 10**6) == []
    assert ledger.pending("p", [file], stale_after=STALE) == []


def test_a_new_process_sees_done_files_as_done(ledger):
    file = landed("a.csv")
    ledger.claim("p", [file], "run-1", stale_after=STALE)
    ledger.finish("p", file.uri, "run-1", "quarantined")
    ledger.claim("p", [landed("b.csv")], "run-1", stale_after=STALE)  # claimed, never finished
    script = (
        "import sys; from include.mlops.data.ledger import Ledger; from include.mlops.data.landing import LandedFile\n"
        "files = [LandedFile(uri=f's3://landing/p/{n}', size=10, modified=0.0, token='t1') for n in ('a.csv', 'b.csv')]\n"
        "taken = Ledger(sys.argv[1]).claim('p', files, 'run-after-restart', stale_after=0)\n"
        "print(','.join(f.uri for f in taken))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(ledger.path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # The done file stays done; the dead run's claim (stale_after=0) is taken over.
    assert out.stdout.strip() == "s3://landing/p/b.csv"


def test_a_stale_claim_is_taken_over_and_the_dead_run_cannot_finish_it(ledger):
    file = landed("a.csv")
    assert ledger.claim("p", [file], "dead-run", stale_after=60, now=1000.0) == [file]
    assert ledger.claim("p", [file], "new-run", stale_after=60, now=1030.0) == []  # still live
    assert ledger.pending("p", [file], stale_after=60, now=1030.0) == []
    assert ledger.pending("p", [file], stale_after=60, now=1061.0) == [file]
    assert ledger.claim("p", [file], "new-run", stale_after=60, now=1061.0) == [file]
    assert not ledger.finish("p", file.uri, "dead-run", "published")
    assert ledger.finish("p", file.uri, "new-run", "published")


def test_renewing_a_claim_keeps_it_live(ledger):
    file = landed("a.csv")
    ledger.claim("p", [file], "run-1", stale_after=60, now=1000.0)
    assert ledger.renew("p", file.uri, "run-1", now=1050.0)
    assert ledger.claim("p", [file], "run-2", stale_after=60, now=1100.0) == []
    assert not ledger.renew("p", file.uri, "run-2")


def test_a_relanded_file_with_new_content_is_new(ledger):
    old, new = landed("a.csv", token="etag1"), landed("a.csv", token="etag2")
    ledger.claim("p", [old], "run-1", stale_after=STALE)
    ledger.finish("p", old.uri, "run-1", "published")
    assert ledger.pending("p", [new], stale_after=STALE) == [new]
    assert ledger.claim("p", [new], "run-2", stale_after=STALE) == [new]
    assert [(e.token, e.state) for e in ledger.entries("p")] == [("etag1", "done"), ("etag2", "claimed")]


def test_one_live_claim_per_uri_whatever_its_version(ledger):
    ledger.claim("p", [landed("a.csv", token="v1")], "run-1", stale_after=STALE)
    # The file changed while run-1 works on it: nobody else may start on it meanwhile.
    assert ledger.claim("p", [landed("a.csv", token="v2")], "run-2", stale_after=STALE) == []
    # run-1 itself moves its claim to the new version.
    assert ledger.claim("p", [landed("a.csv", token="v2")], "run-1", stale_after=STALE)
    assert [(e.token, e.run_id) for e in ledger.entries("p")] == [("v2", "run-1")]


def test_release_returns_files_to_the_pool(ledger):
    a, b = landed("a.csv"), landed("b.csv")
    ledger.claim("p", [a, b], "run-1", stale_after=STALE)
    ledger.finish("p", a.uri, "run-1", "duplicate")
    assert ledger.release_run("p", "run-1") == [b.uri]
    assert ledger.claim("p", [a, b], "run-2", stale_after=STALE) == [b]
    assert ledger.release("p", b.uri, "run-2")
    assert not ledger.release("p", b.uri, "run-2")


def test_pipelines_do_not_share_claims(ledger):
    file = landed("a.csv")
    assert ledger.claim("p", [file], "run-1", stale_after=STALE) == [file]
    assert ledger.claim("q", [file], "run-1", stale_after=STALE) == [file]


def test_unknown_outcome_is_refused(ledger):
    with pytest.raises(ValueError, match="outcome must be one of"):
        ledger.finish("p", "s3://x/y", "run-1", "maybe")


def test_the_default_ledger_is_the_coordination_store_in_the_state_folder(state, monkeypatch):
    monkeypatch.delenv("MLOPS_COORDINATION_URL", raising=False)
    assert Ledger().path == str(state / "coordination.sqlite3")
    monkeypatch.setenv("MLOPS_COORDINATION_URL", "postgresql+psycopg2://u:secret@db.example/airflow")
    ledger = Ledger()
    assert ledger.url == "postgresql+psycopg2://u:secret@db.example/airflow"
    assert ledger.path == "postgresql+psycopg2://u:***@db.example/airflow"  # never shows the password


def test_a_corrupt_ledger_is_a_clear_error(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(Exception, match="not a usable SQLite database"):
        Ledger(path).entries("p")


# The ledger in the ingest flow -----------------------------------------------------------------
def _age(uri: str, seconds: float = 3600) -> None:
    path = uri.removeprefix("file://")
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.fixture
def churn(state, pipelines_dir):
    return find_spec("churn")


def test_discover_claims_complete_files_once_and_the_outcome_is_recorded(churn):
    good = write_batch(churn, "batch-1", rows=300, seed=1)
    bad = write_batch(churn, "batch-2", rows=300, seed=2, id_offset=10_000, malformed_batch=True)
    for uri in (good, bad):
        _age(uri)
    partial = Path(churn.uri("landing").removeprefix("file://")) / "batch-3.parquet.part"
    partial.write_bytes(b"still uploading")

    claimed = ingest.discover(churn, run_id="run-1")
    assert [Path(u).name for u in claimed] == ["batch-1.parquet", "batch-2.parquet"]
    assert ingest.discover(churn, run_id="run-2") == []  # held by run-1
    assert ingest.ingest_claimed(churn, claimed[0], run_id="run-1").status == "published"
    with pytest.raises(ValidationFailed):
        ingest.ingest_claimed(churn, claimed[1], run_id="run-1")
    outcomes = {Path(e.uri).name: (e.state, e.outcome) for e in Ledger().entries("churn")}
    assert outcomes == {"batch-1.parquet": ("done", "published"), "batch-2.parquet": ("done", "quarantined")}
    with pytest.raises(NothingToDo, match="holds no claim"):
        ingest.ingest_claimed(churn, claimed[0], run_id="run-1")


def test_a_failure_other_than_validation_releases_the_claim(churn, monkeypatch):
    uri = write_batch(churn, "batch-1", rows=300, seed=1)
    _age(uri)
    [claimed] = ingest.discover(churn, run_id="run-1")

    def broken(*args, **kwargs):
        raise SpecError("suite missing")

    monkeypatch.setattr(ingest, "ingest_file", broken)
    with pytest.raises(SpecError):
        ingest.ingest_claimed(churn, claimed, run_id="run-1")
    assert Ledger().entries("churn") == []
    assert ingest.discover(churn, run_id="run-2") == [claimed]  # the next run retries it


def test_discover_without_a_run_lists_every_visible_file(churn):
    write_batch(churn, "batch-1", rows=100, seed=1)
    (Path(churn.uri("landing").removeprefix("file://")) / "batch-2.csv._COPYING_").write_text("x")
    assert [Path(u).name for u in ingest.discover(churn)] == ["batch-1.parquet"]
    assert Ledger().entries("churn") == []
