"""What a notification says: one event of one pipeline, with a link to the report behind it.

The core only builds the message; sending it is the Airflow adapter's job (a notifier, see
``plugins/mlops_airflow/notifiers.py``), so the wording is the same for every channel.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from include.mlops.spec import PipelineSpec

EVENTS = {
    "gate_failed": "candidate failed the evaluation gate",
    "drift_detected": "data drift detected",
    "performance_degraded": "champion below the gate's thresholds on labelled data",
    "promoted": "new champion promoted",
    "quarantined": "landed file quarantined",
}


@dataclass(frozen=True)
class Notice:
    """One event: ``summary`` is the one-line reason, ``report`` where to read more."""

    pipeline: str
    event: str
    summary: str
    report: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    where: str = ""  # e.g. "churn__evaluate / manual__2026-..."

    @property
    def subject(self) -> str:
        """E-mail / message subject: the pipeline and the event in words."""
        return f"[airflow-mlops] {self.pipeline}: {EVENTS[self.event]}"

    def text(self) -> str:
        """Plain-text body, one ``Label: value`` line each, links last."""
        lines = [f"Pipeline: {self.pipeline}", f"Event: {self.event} ({EVENTS[self.event]})"]
        if self.where:
            lines.append(f"Airflow: {self.where}")
        lines.append(f"What happened: {self.summary}")
        if self.report:
            lines.append(f"Report: {self.report}")
        lines += [f"{name}: {url}" for name, url in self.links.items()]
        return "\n".join(lines)

    def html(self) -> str:
        """HTML body with the same content as ``text()``, every value escaped."""
        rows = [("Pipeline", self.pipeline), ("Event", f"{self.event} ({EVENTS[self.event]})")]
        if self.where:
            rows.append(("Airflow", self.where))
        rows.append(("What happened", self.summary))
        cells = "".join(
            f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        links = dict(self.links)
        if self.report:
            links = {"Report": self.report, **links}
        anchors = "".join(
            f"<li>{html.escape(name)}: <a href='{html.escape(url)}'>{html.escape(url)}</a></li>"
            for name, url in links.items()
        )
        return (
            f"<html><body><h3>{html.escape(self.subject)}</h3><table>{cells}</table>"
            f"<ul>{anchors}</ul></body></html>"
        )


def wanted(spec: PipelineSpec, event: str) -> bool:
    """Whether the pipeline's ``notifications.events`` subscribes to ``event``."""
    return event in spec.notifications.events
