"""Great Expectations validation of one batch, and a readable HTML report of the result."""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from include.mlops.errors import SpecError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    result: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        """One short line per failed expectation, e.g. ``customer_id: expect_column_values_to_be_unique``."""
        lines = []
        for item in self.result.get("results", []):
            if item.get("success"):
                continue
            config = item.get("expectation_config", {})
            column = config.get("kwargs", {}).get("column", "table")
            res = item.get("result") or {}
            detail = ""
            if "unexpected_count" in res:
                detail = f" ({res['unexpected_count']} of {res.get('element_count', '?')} rows)"
            elif "observed_value" in res:
                detail = f" (observed {res['observed_value']})"
            if (item.get("exception_info") or {}).get("raised_exception"):
                detail = f" (error: {item['exception_info'].get('exception_message')})"
            lines.append(f"{column}: {config.get('type')}{detail}")
        return lines


def load_suite(path: Path) -> dict[str, Any]:
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"validation suite {path} cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"validation suite {path} is not valid JSON: {exc}") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SpecError(f"validation suite {path} must be a JSON object with an 'expectations' list")
    return suite


def validate_frame(frame: pd.DataFrame, suite: dict[str, Any]) -> ValidationOutcome:
    """Run the suite on the whole frame with an ephemeral Great Expectations context.

    Large files go through ``chunked_validation.validate_file`` instead, which reaches the same
    verdict without holding the whole file in memory.
    """
    _, gx_suite, batch_definition = gx_session(suite)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(gx_suite).to_json_dict()
    return ValidationOutcome(success=bool(result["success"]), result=result)


def gx_session(suite: dict[str, Any]) -> tuple[Any, Any, Any]:
    """An ephemeral GE context with the suite added and a whole-DataFrame batch definition.

    Returns ``(context, gx_suite, batch_definition)``; a suite GE rejects is a SpecError.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    try:
        gx_suite = context.suites.add(ExpectationSuite(**{**suite, "name": suite.get("name", "suite")}))
    except Exception as exc:
        raise SpecError(
            f"validation suite {suite.get('name')!r} is not a valid Great Expectations suite: {exc}"
        ) from None
    batch_definition = (
        context.data_sources.add_pandas("mlops")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    return context, gx_suite, batch_definition


def render_html(result: dict[str, Any], *, title: str) -> str:
    """A self-contained page: verdict, statistics, and one row per expectation (failures first)."""
    rows = []
    items = sorted(result.get("results", []), key=lambda r: bool(r.get("success")))
    for item in items:
        config = item.get("expectation_config", {})
        kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
        res = item.get("result") or {}
        observed = {
            k: res[k]
            for k in ("observed_value", "unexpected_count", "unexpected_percent", "partial_unexpected_list")
            if k in res
        }
        error = (item.get("exception_info") or {}).get("exception_message")
        status = "passed" if item.get("success") else "FAILED"
        rows.append(
            f"<tr class='{status.lower()}'><td>{status}</td><td>{html.escape(str(config.get('type')))}</td>"
            f"<td><code>{html.escape(json.dumps(kwargs, default=str))}</code></td>"
            f"<td><code>{html.escape(json.dumps(observed, default=str)[:600])}</code>"
            f"{'<br>error: ' + html.escape(str(error)) if error else ''}</td></tr>"
        )
    stats = result.get("statistics", {})
    verdict = "PASSED" if result.get("success") else "FAILED"
    chunked = (result.get("meta") or {}).get("chunked") or {}
    streamed = (
        f"<p>Validated in {chunked.get('chunks')} chunks of at most {chunked.get('chunk_rows'):,} rows "
        f"({chunked.get('rows'):,} rows in all), without loading the whole file.</p>"
        if chunked.get("chunks")
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.failed td:first-child{{color:#b00;font-weight:bold}} tr.passed td:first-child{{color:#070}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Verdict: <strong>{verdict}</strong> &mdash; {stats.get("successful_expectations", 0)} of
{stats.get("evaluated_expectations", 0)} expectations met (suite <code>{html.escape(str(result.get("suite_name")))}</code>).</p>
{streamed}<table><tr><th>status</th><th>expectation</th><th>arguments</th><th>observed</th></tr>
{"".join(rows)}</table></body></html>
"""


def failure_report(reason: str) -> dict[str, Any]:
    """A result document for batches that never reached the suite (unreadable, wrong columns)."""
    return {
        "success": False,
        "suite_name": "structural-contract",
        "statistics": {"evaluated_expectations": 1, "successful_expectations": 0},
        "results": [
            {
                "success": False,
                "expectation_config": {"type": "file_is_readable_with_required_columns", "kwargs": {}},
                "result": {"observed_value": reason},
            }
        ],
    }
