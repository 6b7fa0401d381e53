"""Where a batch's validation reports live and how they are written (JSON, our HTML, GE Data Docs)."""

from __future__ import annotations

import hashlib
import logging
import os

from include.mlops import storage
from include.mlops.data.validation import (
    render_data_docs,
    render_html,
)

log = logging.getLogger(__name__)

QUARANTINE_TIME = "%Y%m%dT%H%M%SZ"  # quarantine folders: <UTC time>-<sha256[:8]>
REPORT_FILES = {"json": "validation.json", "html": "validation.html", "data_docs": "data_docs.html"}


def report_uris(folder: str) -> dict[str, str]:
    """Where a batch's reports live in its dataset or quarantine folder."""
    return {kind: storage.join(folder, filename) for kind, filename in REPORT_FILES.items()}


def write_reports(folder: str, result: dict, *, title: str) -> dict[str, str]:
    """Write the three reports of one validation into ``folder``; returns their URIs.

    The JSON first (the record), then our page, then Great Expectations' Data Docs page. A Data
    Docs page GE cannot render is replaced by our page (``render_data_docs`` logs why), so
    rendering never costs a batch its reports.
    """
    uris = report_uris(folder)
    storage.write_json(uris["json"], result)
    storage.write_text(uris["html"], render_html(result, title=title))
    page, renderer = render_data_docs(result, title=title)
    storage.write_text(uris["data_docs"], page)
    if renderer != "great_expectations":
        log.warning("%s: data_docs.html holds our own report (%s)", title, renderer)
    return uris


def link_digest(path: str) -> str:
    """What stands for a symbolic link's content: the sha256 of its target path (it is never read)."""
    return hashlib.sha256(os.readlink(path).encode()).hexdigest()
