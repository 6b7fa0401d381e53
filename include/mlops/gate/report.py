"""A human-readable gate report: the decision, every check, and charts, in one HTML file.

Charts (inline SVG, see svg_charts): ROC and precision-recall curves and the confusion matrix for
classification, residuals and predicted-vs-actual for regression, and the bootstrap distribution of
the improvement.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np

from include.mlops.gate.charts import COLORS, Chart, histogram
from include.mlops.gate.records import GateDecision
from include.mlops.metrics import Scored, binary_curve


def confusion_table(target: np.ndarray, predicted: np.ndarray, labels: list[Any]) -> str:
    """Counts (true x predicted) as an HTML table shaded by share of its row."""
    import pandas as pd

    known = set(labels)
    shown = list(labels) + [v for v in pd.unique(target) if v not in known]
    index = pd.Index(shown)
    k = len(shown)
    codes = index.get_indexer(target) * k + index.get_indexer(predicted)
    counts = np.bincount(codes, minlength=k * k).reshape(k, k)
    head = "".join(f"<th>predicted {html.escape(str(v))}</th>" for v in shown)
    rows = []
    for i, label in enumerate(shown):
        total = max(int(counts[i].sum()), 1)
        cells = "".join(
            f"<td style='background:rgba(31,119,180,{0.08 + 0.8 * c / total:.2f})'>{c:,}</td>"
            for c in counts[i]
        )
        rows.append(f"<tr><th>true {html.escape(str(label))}</th>{cells}</tr>")
    return (
        "<table class='confusion'><caption>Candidate confusion matrix</caption>"
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def plots(
    task: str,
    target: np.ndarray,
    candidate: Scored,
    champion: Scored | None,
    distribution: np.ndarray | None,
    interval: tuple[float, float] | None,
    margin: float | None,
) -> dict[str, str]:
    """name -> inline SVG (or HTML table for the confusion matrix)."""
    out: dict[str, str] = {}
    models = [("candidate", candidate)] + ([("champion", champion)] if champion is not None else [])
    if task == "classification":
        if candidate.binary and candidate.proba is not None:
            roc = Chart("ROC curve", "false positive rate", "true positive rate", (0, 1), (0, 1))
            pr = Chart("Precision-recall curve", "recall", "precision", (0, 1), (0, 1))
            roc.segment((0, 0), (1, 1))
            for color, (name, scored) in zip(COLORS, models, strict=False):
                fps, tps = binary_curve(scored, target)
                if fps[-1] == 0 or tps[-1] == 0:
                    continue  # one class only: no curve
                roc.line(np.r_[0, fps / fps[-1]], np.r_[0, tps / tps[-1]], name=name, color=color)
                pr.line(tps / tps[-1], tps / (tps + fps), name=name, color=color)
            out["roc"], out["pr"] = roc.svg(), pr.svg()
        out["confusion"] = confusion_table(target, candidate.predicted, candidate.labels)
    else:
        values = np.concatenate([target] + [s.predicted for _, s in models]).astype(float)
        low, high = float(np.min(values)), float(np.max(values))
        chart = Chart("Predicted vs actual", "actual", "predicted", (low, high), (low, high))
        chart.segment((low, low), (high, high), color="#000")
        for color, (name, scored) in zip(COLORS, models, strict=False):
            chart.scatter(target, scored.predicted, name=name, color=color)
        out["predicted_vs_actual"] = chart.svg()
        out["residuals"] = histogram(
            "Residuals",
            "residual (predicted - actual)",
            [(name, scored.predicted - target) for name, scored in models],
            bins=60,
        )
    if distribution is not None and len(distribution):
        markers = [
            ("interval" if i == 0 else "", bound, "#000", True) for i, bound in enumerate(interval or ())
        ]
        if margin is not None:
            markers.append(("margin", margin, "#c00", False))
        out["bootstrap"] = histogram(
            "Bootstrap: improvement over the champion",
            "improvement (positive = candidate better)",
            [("resamples", distribution)],
            markers=markers,
        )
    return out


def render(decision: GateDecision | Mapping[str, Any], images: dict[str, str]) -> str:
    """The report page: failed checks first, both models' metrics side by side, then the charts."""
    decision = GateDecision.of(decision)
    champion_metrics = decision.champion_metrics
    rows = "".join(
        f"<tr class='{'ok' if c.passed else 'fail'}'><td>{'pass' if c.passed else 'FAIL'}</td>"
        f"<td>{html.escape(c.name)}</td><td>{html.escape(str(c.limit))}</td>"
        f"<td>{html.escape(c.reason)}</td></tr>"
        for c in sorted(decision.checks, key=lambda c: c.passed)
    )
    metric_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td>"
        f"<td>{'' if not champion_metrics else format(champion_metrics.get(k, float('nan')), '.4f')}</td></tr>"
        for k, v in sorted(decision.candidate_metrics.items())
    )
    figures = "".join(f"<figure class='chart' id='{k}'>{v}</figure>" for k, v in images.items())
    verdict = "PASSED" if decision.passed else "FAILED"
    champion = decision.champion_version or "none"
    title = f"{html.escape(decision.model)} v{decision.candidate_version}"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Gate {verdict}: {title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.fail td:first-child{{color:#b00;font-weight:bold}} tr.ok td:first-child{{color:#070}} figure.chart{{display:inline-block;margin:4px}}
table.confusion td{{text-align:right}}</style>
</head><body>
<h1>Gate {verdict}: {title} vs champion {champion}</h1>
<p>Pipeline <code>{html.escape(decision.pipeline)}</code>, decision <code>{decision.id}</code>,
holdout of {decision.holdout_rows} rows. Both models were scored on this same holdout.</p>
<h2>Checks</h2><table><tr><th></th><th>check</th><th>limit</th><th>finding</th></tr>{rows}</table>
<h2>Metrics on the holdout</h2><table><tr><th>metric</th><th>candidate</th><th>champion</th></tr>{metric_rows}</table>
<h2>Plots</h2>{figures}
</body></html>"""
