"""Great Expectations' Data Docs page is stored with every validated batch, and shows the failures."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from include.mlops import storage
from include.mlops.data import ingest, validation
from include.mlops.data.chunked_validation import STREAM_BYTES_ENV
from include.mlops.datagen import housing, write_batch
from include.mlops.errors import ValidationFailed
from include.mlops.spec import find_spec

GE_PAGE = "Expectation Validation Result"  # the heading of GE's validation page


def _text(page: str) -> str:
    """The visible text of a page (scripts and styles dropped, tags removed)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _land(spec, name: str, frame) -> str:
    landing = Path(storage.local_path(spec.uri("landing")))
    landing.mkdir(parents=True, exist_ok=True)
    (landing / name).write_bytes(frame.to_csv(index=False).encode())
    return storage.join(spec.uri("landing"), name)


def _out_of_range():
    frame = housing(80, seed=4)
    frame.loc[frame.index[:3], "distance_km"] = -5.0
    frame["neighborhood"] = frame["neighborhood"].astype(object)
    frame.loc[frame.index[5], "neighborhood"] = "<script>alert('x')</script>"
    return frame


@pytest.fixture
def quarantined_docs(state, pipelines_dir) -> Path:
    spec = find_spec("housing")
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_file(spec, _land(spec, "bad.csv", _out_of_range()))
    return Path(storage.local_path(failed.value.reports["data_docs"]))


def test_quarantined_batch_has_ge_data_docs(quarantined_docs: Path):
    page = quarantined_docs.read_text()
    assert GE_PAGE in _text(page)
    text = _text(page)
    assert "FAILED distance_km: expect_column_values_to_be_between (3 of 80 rows)" in text
    assert "FAILED neighborhood: expect_column_values_to_be_in_set" in text
    assert "Status: Failed" in text and "Unsuccessful Expectations 2" in text
    assert "<script>alert(" not in page  # landed values are escaped, not run
    folder = quarantined_docs.parent
    assert {p.name for p in folder.iterdir()} == {
        "bad.csv",
        "validation.json",
        "validation.html",
        "data_docs.html",
    }


def test_structural_failure_goes_through_the_same_renderer(state, pipelines_dir):
    spec = find_spec("housing")
    frame = housing(60, seed=1).drop(columns=["price"])
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_file(spec, _land(spec, "no_price.csv", frame))
    page = Path(storage.local_path(failed.value.reports["data_docs"])).read_text()
    assert GE_PAGE in _text(page)
    assert "missing required column(s) price" in _text(page)
    assert "FAILED table: file_is_readable_with_required_columns" in _text(page)


def test_published_and_streamed_batches_have_data_docs(state, pipelines_dir, monkeypatch):
    spec = find_spec("churn")
    write_batch(spec, "small", rows=300, seed=2)
    [small] = [ingest.ingest_file(spec, uri) for uri in ingest.discover(spec)]
    monkeypatch.setenv(STREAM_BYTES_ENV, "1")  # the chunked path
    write_batch(spec, "large", rows=300, seed=3, id_offset=10_000)
    [large] = [ingest.ingest_file(spec, uri) for uri in ingest.discover(spec)]
    for result in (small, large):
        assert result.status == "published"
        assert set(result.reports) == {"json", "html", "data_docs"}
        assert result.report == result.reports["html"]
        page = Path(storage.local_path(result.reports["data_docs"])).read_text()
        assert GE_PAGE in _text(page) and "Status: Succeeded" in _text(page)
    assert "chunked" in storage.read_json(large.reports["json"])["meta"]


def test_render_failure_never_loses_the_batch(state, pipelines_dir, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(validation, "_ge_page", broken)
    spec = find_spec("housing")
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_file(spec, _land(spec, "bad.csv", _out_of_range()))
    reports = failed.value.reports
    assert (
        Path(storage.local_path(reports["data_docs"])).read_text()
        == Path(storage.local_path(reports["html"])).read_text()
    )
    assert Path(storage.local_path(failed.value.quarantined_to)).is_file()
    assert "renderer exploded" in caplog.text


# --- the page as a browser shows it -------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _png_colours(data: bytes) -> tuple[int, int, int]:
    """(width, height, number of distinct pixel values in a sample) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    try:
        from PIL import Image

        with Image.open(__import__("io").BytesIO(data)) as image:
            image = image.convert("RGB")
            return width, height, len(set(image.getdata()))
    except ImportError:
        pass
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    return width, height, len(set(raw[i : i + 3] for i in range(1, min(len(raw), 400_000), 3)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it with apt-get)")
def test_quarantined_data_docs_render_in_headless_chromium(quarantined_docs: Path, tmp_path: Path):
    url = quarantined_docs.as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "data_docs.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*flags, "--dump-dom", url], check=True, capture_output=True, timeout=120, text=True
    ).stdout
    text = _text(dom)
    assert "distance_km" in text and "expect_column_values_to_be_between" in text
    assert "neighborhood" in text and "expect_column_values_to_be_in_set" in text
    assert "Status: Failed" in text
    data = shot.read_bytes()
    width, height, colours = _png_colours(data)
    assert (width, height) == (1280, 2000)  # a PNG of the window Chromium was asked to draw
    assert len(data) > 20_000 and colours > 1  # a page was drawn, not a blank canvas
