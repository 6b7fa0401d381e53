"""Byte-level checks of a landed file (encoding, binary content, row widths, Parquet magic) before any parser runs."""

from __future__ import annotations

import codecs
import csv
import io
from typing import Any

from include.mlops import storage
from include.mlops.errors import DataError
from include.mlops.storage import open_binary

BOMS = {
    b"\xef\xbb\xbf": "UTF-8",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
PARQUET_MAGIC = b"PAR1"


def sniff_bytes(data: bytes, fmt: str, *, name: str, complete: bool = True) -> None:
    """Cheap checks on the raw bytes, so that the reason names the real problem, not a parser's symptom.

    ``complete=False``: ``data`` is the head of a larger CSV file (``sniff_file``); a character cut
    at its end is not an error and the rows are checked by the caller.
    """
    if fmt == "parquet":
        _check_parquet_ends(data, name=name)
        return
    _check_text_bytes(data, name=name)
    text = _decode_utf8(data, name=name, complete=complete)
    _check_delimiter(text.split("\n", 1)[0], name=name)
    if complete:
        _check_csv_rows(text, name=name)


def _check_parquet_ends(data: bytes, *, name: str) -> None:
    """A Parquet file starts and ends with the magic bytes: a wrong format or a truncated upload."""
    if data[:4] != PARQUET_MAGIC:
        looks = "text" if _is_text(data[:4096]) else "binary data"
        raise DataError(
            f"{name}: cannot be read as parquet: not a Parquet file (no PAR1 magic bytes at the start; it holds {looks}); "
            "export it as Parquet or land it with the extension of its real format"
        )
    if len(data) < 12 or data[-4:] != PARQUET_MAGIC:
        raise DataError(
            f"{name}: cannot be read as parquet: a truncated or corrupt Parquet file (no footer at the end); upload it again"
        )


def _check_text_bytes(data: bytes, *, name: str) -> None:
    """No byte-order mark and no binary content (NUL bytes, Parquet magic) at the start of a CSV file."""
    for bom, encoding in BOMS.items():
        if data.startswith(bom):
            raise DataError(
                f"{name}: starts with a {encoding} byte-order mark; remove the byte-order mark "
                "(export as UTF-8 without BOM)"
            )
    if data[:4] == PARQUET_MAGIC or b"\x00" in data[:4096]:
        raise DataError(
            f"{name}: is binary data, not CSV text; export it as CSV or land it with its real extension"
        )


def _decode_utf8(data: bytes, *, name: str, complete: bool) -> str:
    """The text of ``data``; a head (``complete=False``) may end inside a character, which is dropped."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not complete and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")
        raise DataError(
            f"{name}: is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-export it as UTF-8"
        ) from None


def _check_delimiter(header: str, *, name: str) -> None:
    """A header without a comma but with another usual delimiter: say so rather than read one column."""
    if "," not in header:
        for delimiter, label in ((";", "';'"), ("\t", "a tab"), ("|", "'|'")):
            if delimiter in header:
                raise DataError(
                    f"{name}: uses {label} as the delimiter; expected ',' (comma-separated values)"
                )


SNIFF_HEAD_BYTES = 64 * 1024


def sniff_file(uri: str, fmt: str, *, name: str) -> None:
    """``sniff_bytes`` for a file too large to hold in memory, with the same reasons.

    Parquet: the magic bytes at both ends. CSV: the byte-order mark, binary content and delimiter
    from the first 64 KiB, then one streamed pass that decodes the whole file as UTF-8 and checks
    that every row has as many fields as the header (the parser would pad a short row with nulls).
    """
    total = storage.size(uri)
    with open_binary(uri) as handle:
        if fmt == "parquet":
            if total <= 4096 + 4:
                sniff_bytes(handle.read(), fmt, name=name)
                return
            head = handle.read(4096)
            handle.seek(total - 4)
            sniff_bytes(head + handle.read(4), fmt, name=name)  # what sniff_bytes looks at
            return
        head = handle.read(SNIFF_HEAD_BYTES)
        sniff_bytes(head, fmt, name=name, complete=len(head) >= total)
        if len(head) < total:
            handle.seek(0)
            _check_stream_rows(handle, name=name)


def _check_stream_rows(handle: Any, *, name: str) -> None:
    """UTF-8 decoding and row widths of a whole CSV file, streamed (same messages as ``sniff_bytes``)."""
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="\n")
    try:
        _check_csv_rows_iter(text, name=name)
    except UnicodeDecodeError:
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        while block := handle.read(1 << 20):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                at = offset - pending + exc.start
                raise DataError(
                    f"{name}: is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {at}); "
                    "re-export it as UTF-8"
                ) from None
            offset += len(block)
        raise DataError(f"{name}: is not UTF-8 text; re-export it as UTF-8") from None
    finally:
        text.detach()


def _check_csv_rows(text: str, *, name: str) -> None:
    """Every row has as many fields as the header (a truncated row, a wide row, a schema change)."""
    _check_csv_rows_iter(io.StringIO(text), name=name)


CSV_FIELD_LIMIT = 1 << 30  # pandas reads fields of any length; the csv module stops at 128 KiB


def _check_csv_rows_iter(lines: Any, *, name: str) -> None:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    rows = csv.reader(lines)
    try:
        header = next(rows, None)
        if header is None:
            return
        width = len(header)
        for row in rows:
            if not row:
                continue
            if len(row) != width:
                # same words as the parser's own error (``_unreadable``), so streamed and whole reads agree
                raise DataError(
                    f"{name}: cannot be read as csv: line {rows.line_num} has {len(row)} fields, "
                    f"the header has {width}"
                )
    except csv.Error as exc:
        raise DataError(f"{name}: cannot be read as csv: line {rows.line_num}: {exc}") from None


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in data
