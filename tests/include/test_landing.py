"""What a landed file is, and when it is complete: temporary names, markers, the settle and stability
rules, version tokens."""

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


@pytest.mark.parametrize("name", ["batch.csv._SUCCESS", "batch.csv._success"])
def test_markers_are_never_data(name):
    assert landing.is_marker(name) and landing.is_temporary(name)


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


def test_a_file_renamed_into_place_is_taken_after_one_short_look_not_after_settle_seconds():
    clock = FakeClock(1000.0)
    listing = [file("renamed.csv", 999.9)]  # just renamed in: fresh mtime, never changes again
    ready, young = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert [f.name for f in ready] == ["renamed.csv"] and young == []
    assert clock.slept == [landing.STABLE_SECONDS]


def test_a_file_still_growing_waits_and_is_left_for_a_later_run_after_settle_seconds():
    clock = FakeClock(1000.0)
    listing = [file("growing.csv", 999.0, token="size-1")]

    def grows() -> None:
        listing[0] = file("growing.csv", clock.now, token=f"size-{len(clock.slept) + 1}")

    clock.on_sleep = grows
    ready, young = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert ready == [] and [f.name for f in young] == ["growing.csv"]
    assert sum(clock.slept) == pytest.approx(30) and max(clock.slept) <= landing.STABLE_SECONDS


def test_a_file_that_stops_growing_during_the_wait_is_taken():
    clock = FakeClock(1000.0)
    listing = [file("growing.csv", 999.0, token="size-1")]

    def grows_twice() -> None:
        if len(clock.slept) <= 2:
            listing[0] = file("growing.csv", clock.now, token=f"size-{len(clock.slept) + 1}")

    clock.on_sleep = grows_twice
    ready, _ = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert [f.token for f in ready] == ["size-3"] and len(clock.slept) == 3


def test_a_file_first_seen_older_than_settle_seconds_is_ready_at_once():
    ready, young = landing.split_ready([file("moved-in.csv", 900.0)], 1000.0, 30)
    assert [f.name for f in ready] == ["moved-in.csv"] and young == []


def test_a_marker_makes_its_file_ready_at_once_and_is_never_data_itself():
    listing = [
        file("a.csv", 999.5),
        file("a.csv._SUCCESS", 999.6),
        file("b.csv", 999.5),
        file("b.csv._SUCCESS", 999.0),  # older than b.csv: b was rewritten after its marker
    ]
    ready, young = landing.split_ready(listing, 1000.0, 30)
    assert [f.name for f in ready] == ["a.csv"] and [f.name for f in young] == ["b.csv"]
    assert landing.ready_reason(listing[0], 1000.0, 30, marked=landing.markers(listing)) == "marker"


def test_a_folder_success_marker_covers_the_files_written_before_it():
    listing = [file("part-0.csv", 999.0), file("_SUCCESS", 999.2), file("late.csv", 999.5)]
    ready, young = landing.split_ready(listing, 1000.0, 30)
    assert [f.name for f in ready] == ["part-0.csv"] and [f.name for f in young] == ["late.csv"]


def test_the_stability_rule_needs_the_same_version_seen_stable_seconds_apart():
    first = file("x.csv", 999.0, token="v1")
    seen = landing.observe({}, [first], 1000.0)
    assert landing.ready_reason(first, 1001.0, 30, first_seen=seen) is None
    assert landing.ready_reason(first, 1000.0 + landing.STABLE_SECONDS, 30, first_seen=seen) == "unchanged"
    changed = file("x.csv", 1001.5, token="v2")
    seen = landing.observe(seen, [changed], 1002.0)
    assert seen == {changed.key: 1002.0}  # the old version is forgotten, the new one starts over
    assert landing.ready_reason(changed, 1003.0, 30, first_seen=seen) is None


def test_clock_skew_does_not_hold_a_file_forever():
    """A store clock ahead of ours: the file looks modified in the future, but two looks apart saw
    it unchanged, which needs no clock of the store."""
    clock = FakeClock(1000.0)
    listing = [file("skewed.csv", 1100.0)]
    ready, _ = landing.wait_for_ready(lambda: listing, 30, clock=clock, sleep=clock.sleep)
    assert [f.name for f in ready] == ["skewed.csv"]
    assert clock.slept == [landing.STABLE_SECONDS]


def test_a_real_file_renamed_into_place_is_ready_after_a_short_look(tmp_path):
    (tmp_path / "._tmp-batch.csv").write_text("a,b\n1,2\n")
    assert landing.wait_for_ready(lambda: landing.scan_local(str(tmp_path)), 30, sleep=lambda s: None) == (
        [],
        [],
    )  # only a temporary name so far: nothing to wait for
    (tmp_path / "._tmp-batch.csv").rename(tmp_path / "batch.csv")
    started = time.monotonic()
    ready, young = landing.wait_for_ready(lambda: landing.scan_local(str(tmp_path)), 30, stable_seconds=0.2)
    assert [f.name for f in ready] == ["batch.csv"] and young == []
    assert time.monotonic() - started < 5


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


def test_the_demo_writer_lands_files_by_rename_so_they_are_ready_after_a_short_look(state):
    from include.mlops.datagen import write_batch, write_labels
    from include.mlops.spec import find_spec

    spec = find_spec("churn")
    uri = write_batch(spec, "batch-001", rows=50, seed=1)
    labels = write_labels(spec, "labels-001", rows=50, seed=1)
    for folder, expected in ((spec.uri("landing"), uri), (spec.uri("labels"), labels)):
        listing = landing.scan(folder)
        assert [f.uri for f in listing] == [expected]  # no temporary file left behind
        ready, young = landing.wait_for_ready(lambda f=folder: landing.scan(f), 30, stable_seconds=0.1)
        assert [f.uri for f in ready] == [expected] and young == []
