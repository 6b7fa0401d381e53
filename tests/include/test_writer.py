"""PartitionWriter: closing never leaves a sink open, and leftovers are removed only once their owner is gone.

Local folders are real files under ``tmp_path``; the other attempt is a second writer in this
process or a subprocess (killed with ``SIGKILL``, as an OOM kill would). The object-store case uses
moto's S3 server on 127.0.0.1 (through s3fs), and fsspec's in-memory file system where an object's
age must be set (like S3 and GCS, it shows an object only once it is closed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.mlops import storage
from include.mlops.scoring import writer as writer_module
from include.mlops.scoring.writer import LEFTOVER_GRACE, PartitionWriter

ROOT = Path(__file__).resolve().parents[2]


def table(first: int, rows: int = 3) -> pa.Table:
    ids = list(range(first, first + rows))
    return pa.table({"id": ids, "probability": [i / 100 for i in ids]})


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(storage.TEMP_PREFIX))


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_folder(moto_endpoint, monkeypatch) -> Iterator[str]:
    """A partition folder in a fresh bucket; s3fs finds the server through AWS_ENDPOINT_URL."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached instance may know another endpoint
    bucket = f"scores-{uuid.uuid4().hex[:8]}"
    fs, _ = storage.fs_for(f"s3://{bucket}")
    fs.mkdir(bucket)
    yield f"s3://{bucket}/part=1"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def memory_folder() -> Iterator[str]:
    """A partition folder on fsspec's in-memory file system, removed afterwards."""
    folder = f"memory://writer-{uuid.uuid4().hex[:8]}/part=1"
    yield folder
    storage.remove_tree(folder.rsplit("/", 1)[0])


# Closing ---------------------------------------------------------------------------------------------


def test_a_failing_close_still_closes_the_sink_and_resets_the_writer(s3_folder, monkeypatch):
    """The Parquet footer cannot be written: the S3 upload (the sink) is closed anyway."""
    writer = PartitionWriter(s3_folder, "id")
    writer.begin()

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), writer.open("batch-1"):
        writer.write(table(0), "batch-1")
        sink, parquet = writer._sink, writer._writer
        assert sink is not None and not sink.closed
        monkeypatch.setattr(parquet, "close", disk_full)
    parquet.is_open = False  # its footer was never written: keep its __del__ from trying again
    assert sink.closed, "the sink was left open"
    assert writer._writer is None and writer._sink is None
    fs, path = storage.fs_for(s3_folder)
    assert fs.find(path) == [], "the failed attempt left an object behind"

    # The same writer works again from a clean state (a new ParquetWriter, a new sink).
    with writer.open("batch-1"):
        writer.write(table(0), "batch-1")
    writer.commit({"rows": writer.rows})
    with fs.open(f"{path}/predictions.parquet", "rb") as handle:
        assert pq.read_table(handle).column("id").to_pylist() == [0, 1, 2]


# Leftovers: a live attempt's file is never removed ---------------------------------------------------


def test_a_retry_beginning_while_an_attempt_still_writes_leaves_its_file_alone(tmp_path):
    """A zombie (still writing) and its retry: the retry's begin() must not delete the zombie's file,
    or the zombie's rename fails; the zombie's later begin() must not delete the retry's either."""
    folder = tmp_path / "part=1"
    zombie = PartitionWriter(f"file://{folder}", "id")
    zombie.begin()
    with zombie.open("zombie"):
        zombie.write(table(0), "zombie")
        [live] = temporaries(folder)
        retry = PartitionWriter(f"file://{folder}", "id")
        retry.begin()
        assert temporaries(folder) == [live], "a live attempt's temporary file was removed"
        with retry.open("retry"):
            retry.write(table(10), "retry")
            zombie.begin()  # the other way round: the retry's file survives the zombie's begin()
            assert len(temporaries(folder)) == 2
        zombie.write(table(3), "zombie")  # still writing after the retry committed its file
    zombie.commit({"rows": zombie.rows})
    assert temporaries(folder) == []
    out = pq.read_table(folder / "predictions.parquet")
    assert out.column("id").to_pylist() == [0, 1, 2, 3, 4, 5]  # whole: one attempt's file, never a mix


CHILD = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from include.mlops.scoring.writer import PartitionWriter

    writer = PartitionWriter(sys.argv[1], "id")
    writer.begin()
    with writer.open("child"):
        writer.write(pa.table({"id": [1], "probability": [0.5]}), "child")
        print("writing", flush=True)
        time.sleep(120)
    """
)


def test_a_leftover_is_kept_while_its_process_lives_and_removed_once_it_was_killed(tmp_path):
    folder = tmp_path / "part=1"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"file://{folder}"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        [live] = temporaries(folder)
        PartitionWriter(f"file://{folder}", "id").begin()
        assert temporaries(folder) == [live], "the file of a running attempt was removed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert temporaries(folder) == [live]  # the kill left it behind
    PartitionWriter(f"file://{folder}", "id").begin()
    assert temporaries(folder) == [], "the leftover of a killed attempt was kept"


def test_a_leftover_nobody_holds_is_removed_at_once(tmp_path):
    """A file without a lock holder (an attempt that crashed, a writer of an older release)."""
    folder = tmp_path / "part=1"
    folder.mkdir()
    (folder / f"{storage.TEMP_PREFIX}{uuid.uuid4().hex}-predictions.parquet").write_bytes(b"partial")
    (folder / "predictions.parquet").write_bytes(b"previous output")
    PartitionWriter(f"file://{folder}", "id").begin()
    assert sorted(p.name for p in folder.iterdir()) == ["predictions.parquet"]


# Leftovers on an object store: by age ----------------------------------------------------------------


def test_on_an_object_store_only_leftovers_older_than_the_grace_period_are_removed(memory_folder):
    fs, path = storage.fs_for(memory_folder)
    young = f"{path}/{storage.TEMP_PREFIX}{uuid.uuid4().hex}-predictions.parquet"
    old = f"{path}/{storage.TEMP_PREFIX}{uuid.uuid4().hex}-predictions.parquet"
    fs.pipe(young, b"just uploaded, about to be renamed by its owner")
    fs.pipe(old, b"abandoned")
    fs.store[old].modified = datetime.now(UTC) - timedelta(seconds=LEFTOVER_GRACE + 60)

    PartitionWriter(memory_folder, "id").begin()
    assert fs.find(path) == [young]
    fs.store[young].modified = datetime.now(UTC) - timedelta(seconds=LEFTOVER_GRACE + 1)
    writer_module.remove_leftovers(memory_folder)
    assert fs.find(path) == []


def test_on_s3_a_leftover_just_uploaded_is_kept(s3_folder):
    fs, path = storage.fs_for(s3_folder)
    young = f"{path}/{storage.TEMP_PREFIX}{uuid.uuid4().hex}-predictions.parquet"
    fs.pipe(young, b"uploaded, about to be renamed by its owner")
    PartitionWriter(s3_folder, "id").begin()
    assert fs.find(path) == [young]
