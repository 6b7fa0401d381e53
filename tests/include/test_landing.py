"""What a landed file is, and when it is complete: temporary names, the settle rule, version tokens."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest

from include.mlops.data import landing
from include.mlops.data.landing import LandedFile


@pytest.mark.parametrize(
    "name",
    [".hidden.csv", "_SUCCESS", "batch.csv.part", "batch.parquet.tmp", "batch.csv._COPYING_", "x.crdownload"],
)
def test_temporary_names_are_never_complete(name):
    assert landing.is_temporary(name)


@pytest.mark.parametrize("name", ["batch.csv", "batch-001.parquet", "part-0001.parquet", "tmp_data.csv"])
def test_ordinary_names_are_not_temporary(name):
    assert not landing.is_temporary(name)


class FakeClock:
    """A clock the test moves; ``sleep`` advances it and lets a callback change the files."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []
        self.on_sleep = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep()


def file(name: str, modified: float, token: str = "t1") -> LandedFile:
    return LandedFile(uri=f"file:///landing/{name}", size=1, modified=modified, token=token)


def test_ready_files_are_taken_without_waiting_for_settling_ones():
    clock = FakeClock(1000.0)
    listing = [file("old.csv", 900.0), file("young.csv", 995.0), file("old.csv.part", 100.0)]
    ready, young = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert [f.name for f in ready] == ["old.csv"]
    assert [f.name for f in young] == ["young.csv"]
    assert clock.slept == []


def test_only_settling_files_are_waited_for_once():
    clock = FakeClock(1000.0)
    listing = [file("young.csv", 990.0)]
    ready, young = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert [f.name for f in ready] == ["young.csv"] and young == []
    assert clock.slept == [20.0]


def test_a_file_still_growing_during_the_wait_is_left_for_a_later_run():
    clock = FakeClock(1000.0)
    listing = [file("growing.csv", 999.0, token="size-1")]

    def grows() -> None:
        listing[0] = file("growing.csv", clock.now, token="size-2")

    clock.on_sleep = grows
    ready, young = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert ready == [] and [f.token for f in young] == ["size-2"]
    assert len(clock.slept) == 1


def test_clock_skew_does_not_hold_a_file_forever():
    """A store clock ahead of ours: the file looks modified in the future, but it did not change
    during a full settle period, which is the rule."""
    clock = FakeClock(1000.0)
    listing = [file("skewed.csv", 1100.0)]
    ready, _ = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert [f.name for f in ready] == ["skewed.csv"]
    assert clock.slept == [30]


def test_settle_zero_takes_every_visible_file():
    clock = FakeClock(1000.0)
    ready, young = landing.wait_for_ready(
        lambda: [file("now.csv", 1000.0)], 0, clock=clock, sleep=clock.sleep
    )
    assert [f.name for f in ready] == ["now.csv"] and young == [] and clock.slept == []


def test_local_tokens_change_when_a_file_is_rewritten_or_moved_back(tmp_path):
    path = tmp_path / "batch.csv"
    path.write_text("a,b\n1,2\n")
    first = landing.scan_local(str(tmp_path))[0]
    assert first.uri == f"file://{path}" and first.size == 8
    past = time.time() - 3600
    os.utime(path, (past, past))
    rewritten = landing.scan_local(str(tmp_path))[0]
    assert rewritten.token != first.token and rewritten.modified == pytest.approx(past)
    ctime = os.stat(path).st_ctime_ns
    path.rename(tmp_path / "elsewhere.csv")
    (tmp_path / "elsewhere.csv").rename(path)  # moved back unchanged: same mtime, new ctime
    moved_back = landing.scan_local(str(tmp_path))[0]
    assert moved_back.modified == rewritten.modified
    # The token follows the ctime (which a rename sets, at the file system's clock granularity).
    assert (moved_back.token != rewritten.token) == (os.stat(path).st_ctime_ns != ctime)


def test_a_missing_local_landing_folder_has_no_files(tmp_path):
    assert landing.scan_local(str(tmp_path / "missing")) == []
    assert landing.scan(f"file://{tmp_path / 'missing'}") == []


def test_object_store_entries_become_landed_files():
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    s3 = landing.s3_object("bkt", {"Key": "in/a.csv", "ETag": '"abc"', "LastModified": when, "Size": 5})
    assert (s3.uri, s3.size, s3.modified) == ("s3://bkt/in/a.csv", 5, when.timestamp())
    assert s3.token == f"abc-{int(when.timestamp() * 1000)}"
    gcs = landing.gcs_object(
        "bkt", {"name": "in/a.csv", "size": "5", "generation": "17", "updated": "2026-05-01T12:00:00.000Z"}
    )
    assert (gcs.uri, gcs.size, gcs.modified, gcs.token) == ("gs://bkt/in/a.csv", 5, when.timestamp(), "g17")


def test_split_bucket():
    assert landing.split_bucket("s3://bkt/landing/churn") == ("s3", "bkt", "landing/churn/")
    assert landing.split_bucket("gs://bkt/") == ("gs", "bkt", "")


def test_landed_files_round_trip_through_dicts():
    original = file("a.csv", 12.5)
    assert LandedFile.from_dict(original.to_dict()) == original
