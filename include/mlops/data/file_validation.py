"""The checks of one landed file against its spec and suite, whole or streamed in bounded memory.

Kept apart from ``ingest`` (which decides what happens to the file: published or quarantined) so
that benchmarks and tools can run exactly the checks ingestion runs without moving anything.
"""

from __future__ import annotations

import pandas as pd

from include.mlops import storage
from include.mlops.data.chunked_validation import validate_file
from include.mlops.data.columns import check_columns
from include.mlops.data.content_checks import ContentCheck, check_content
from include.mlops.data.reading import read_frame, read_header
from include.mlops.data.sniffing import sniff_file
from include.mlops.data.validation import ValidationOutcome, validate_frame
from include.mlops.spec import PipelineSpec


def validate_whole(
    spec: PipelineSpec, uri: str, fmt: str, suite: dict
) -> tuple[pd.DataFrame, ValidationOutcome]:
    """A file small enough to hold: byte checks, structure, content rules, then the suite."""
    name = storage.basename(uri)
    frame = read_frame(uri, fmt)
    check_columns(frame, spec, name=name)
    check_content(frame, spec, suite, name=name)
    return frame, validate_frame(frame, suite)


def validate_streamed(spec: PipelineSpec, uri: str, fmt: str, suite: dict) -> ValidationOutcome:
    """The same checks and verdict as ``validate_whole``, chunk by chunk in bounded memory."""
    name = storage.basename(uri)
    sniff_file(uri, fmt, name=name)  # the byte checks read_frame makes, streamed
    header = read_header(uri, fmt)
    check_columns(header, spec, name=name)
    content = ContentCheck(list(map(str, header.columns)), spec, suite, name=name)
    outcome = validate_file(uri, fmt, suite, content=content)
    content.finish()  # the small-file path's content rules, tallied over the same chunks
    return outcome
