"""Great Expectations validation of one batch, and a readable HTML report of the result."""

from __future__ import annotations

import html
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from include.mlops.errors import SpecError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@dataclass(frozen=True)
class ValidationOutcome:
    """A suite's verdict and its GE result, with the failures phrased for people."""

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
    """A suite file as a dict; an unreadable or malformed suite is a spec error, not bad data."""
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
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]  # GE accepts the dict
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


DATA_DOCS_RENDERER = "great_expectations"  # data_docs.html rendered by GE; "fallback": our render_html


def render_data_docs(result: dict[str, Any], *, title: str) -> tuple[str, str]:
    """Great Expectations' own Data Docs page of a validation result, as one HTML string.

    Returns ``(page, renderer)``: ``renderer`` is ``"great_expectations"`` when GE rendered the page
    (``ValidationResultsPageRenderer`` + ``DefaultJinjaPageView``, as GE's Data Docs site does) and
    ``"fallback"`` when it could not and the page is ``render_html``'s. A rendering error is logged
    and never propagates: the batch and its JSON report matter more than a pretty page.

    GE's page loads Bootstrap, Font Awesome and jQuery from CDNs; offline its status icons and
    filters do not show, so a plain-text banner naming every failed expectation is added at the top.
    Structural failures (``failure_report``) go through the same renderer as one
    ``file_is_readable_with_required_columns`` expectation.
    """
    try:
        return _ge_page(result, title=title), DATA_DOCS_RENDERER
    except Exception:
        logging.getLogger(__name__).exception(
            "Great Expectations could not render the Data Docs page of %r; using our own report", title
        )
        return render_html(result, title=title), "fallback"


def _ge_page(result: dict[str, Any], *, title: str) -> str:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.core.expectation_validation_result import (
        expectationSuiteValidationResultSchema,
    )
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    document = _escaped(json.loads(json.dumps(result, default=str)))
    document.pop("id", None)
    if any(
        (item.get("expectation_config") or {}).get("type") == STRUCTURAL_EXPECTATION
        for item in document.get("results", [])
    ):
        _register_structural_expectation()
    loaded = expectationSuiteValidationResultSchema.load(document)
    page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(loaded))
    if not isinstance(page, str):
        page = "".join(page)
    failed = ValidationOutcome(success=bool(result.get("success")), result=result).failures
    verdict = "PASSED" if result.get("success") else "FAILED"
    banner = (
        "<div id='mlops-verdict' style='font-family:sans-serif;padding:8px 16px;"
        f"background:{'#e6f4ea' if result.get('success') else '#fdecea'};border-bottom:1px solid #ccc'>"
        f"<strong>{html.escape(title)}: {verdict}</strong>"
        + (
            "<ul>" + "".join(f"<li>FAILED {html.escape(line)}</li>" for line in failed) + "</ul>"
            if failed
            else ""
        )
        + "</div>"
    )
    page = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", page, count=1, flags=re.S)
    head, body, rest = page.partition("<body>")
    return head + body + banner + rest if body else banner + page


# GE's renderer prints observed values and unexpected values as HTML, unescaped; our values come
# from landed files, so every string in the result sections is escaped before GE sees it.
_RESULT_KEYS = ("result", "exception_info")


def _escaped(document: dict[str, Any]) -> dict[str, Any]:
    def escape(value: Any) -> Any:
        if isinstance(value, str):
            return html.escape(value, quote=False)
        if isinstance(value, list):
            return [escape(v) for v in value]
        if isinstance(value, dict):
            return {k: escape(v) for k, v in value.items()}
        return value

    for item in document.get("results", []):
        for key in _RESULT_KEYS:
            if item.get(key) is not None:
                item[key] = escape(item[key])
    if isinstance(document.get("meta"), dict):  # the source file name and the run id are shown too
        document["meta"] = escape(document["meta"])
    return document


STRUCTURAL_EXPECTATION = "file_is_readable_with_required_columns"
_structural_registered = False


def _register_structural_expectation() -> None:
    """Teach GE's renderer the pseudo-expectation of ``failure_report`` (never run by GE itself)."""
    global _structural_registered
    if _structural_registered:
        return
    from great_expectations.expectations.expectation import BatchExpectation
    from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
    from great_expectations.render.renderer.renderer import renderer

    class FileIsReadableWithRequiredColumns(BatchExpectation):
        """The file can be read and has the columns the spec and suite need (checked before the suite)."""

        metric_dependencies = ()
        success_keys = ()
        domain_keys = ()

        def _validate(self, metrics, runtime_configuration=None, execution_engine=None):  # never called
            return {"success": False}

        @classmethod
        @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
        def _prescriptive_renderer(cls, configuration=None, result=None, runtime_configuration=None):
            return [
                RenderedStringTemplateContent(
                    content_block_type="string_template",
                    string_template={
                        "template": "file must be readable, with the columns and value types the spec "
                        "and suite require (structural contract, checked before the suite).",
                        "params": {},
                    },
                )
            ]

    _structural_registered = FileIsReadableWithRequiredColumns.expectation_type == STRUCTURAL_EXPECTATION


def failure_report(reason: str) -> dict[str, Any]:
    """A result document for batches that never reached the suite (unreadable, wrong columns)."""
    return {
        "success": False,
        "suite_name": "structural-contract",
        "statistics": {"evaluated_expectations": 1, "successful_expectations": 0},
        "results": [
            {
                "success": False,
                "expectation_config": {"type": STRUCTURAL_EXPECTATION, "kwargs": {}},
                "result": {"observed_value": reason},
            }
        ],
    }
