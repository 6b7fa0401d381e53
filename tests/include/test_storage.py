from __future__ import annotations

import pytest

from include.mlops import storage


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = (tmp_path / "out" / "file.bin").as_uri()
    with pytest.raises(RuntimeError), storage.atomic_path(target) as tmp:
        storage.fs_for(tmp)[0].pipe_file(storage.fs_for(tmp)[1], b"partial")
        raise RuntimeError("killed mid-write")
    assert not storage.exists(target)
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_write_replaces_previous_output(tmp_path):
    target = (tmp_path / "x.json").as_uri()
    storage.write_json(target, {"a": 1})
    storage.write_json(target, {"a": 2})
    assert storage.read_json(target) == {"a": 2}


def test_move_never_overwrites(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.csv").write_text("one")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f.csv").write_text("two")
    moved = storage.move((tmp_path / "a" / "f.csv").as_uri(), (tmp_path / "b" / "f.csv").as_uri())
    assert moved != (tmp_path / "b" / "f.csv").as_uri()
    assert (tmp_path / "b" / "f.csv").read_text() == "two"
    assert sorted(p.read_text() for p in (tmp_path / "b").iterdir()) == ["one", "two"]


def test_move_across_stores_lands_in_the_destination_store(tmp_path):
    """An object-store landing file archived to a local folder (and back): streamed, then deleted."""
    import uuid

    src = f"memory://move-{uuid.uuid4().hex}/landing/f.csv"
    storage.write_bytes(src, b"a,b\n1,2\n")
    moved = storage.move(src, (tmp_path / "archive" / "f.csv").as_uri())
    assert moved == (tmp_path / "archive" / "f.csv").as_uri()
    assert (tmp_path / "archive" / "f.csv").read_bytes() == b"a,b\n1,2\n"
    assert not storage.exists(src)
    assert [p.name for p in (tmp_path / "archive").iterdir()] == ["f.csv"]  # no temporary left

    back = storage.move(moved, src)
    assert storage.read_bytes(back) == storage.read_bytes(src) == b"a,b\n1,2\n"
    assert not (tmp_path / "archive" / "f.csv").exists()


def test_list_files_skips_hidden_and_temporary(tmp_path):
    for name in ("data.csv", "._tmp-123-data.csv", ".hidden", "_SUCCESS"):
        (tmp_path / name).write_text("x")
    assert [storage.basename(u) for u in storage.list_files(tmp_path.as_uri())] == ["data.csv"]
