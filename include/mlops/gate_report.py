"""A human-readable gate report: the decision, every check, and plots, in one HTML file.

Plots (PNG, embedded): ROC and precision-recall curves and the confusion matrix for classification,
residuals and predicted-vs-actual for regression, and the bootstrap distribution of the improvement.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def plots(
    task: str,
    target: np.ndarray,
    candidate: Any,
    champion: Any | None,
    distribution: np.ndarray | None,
    interval: tuple[float, float] | None,
    margin: float | None,
) -> dict[str, str]:
    """name -> base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as m

    out: dict[str, str] = {}
    models = [("candidate", candidate)] + ([("champion", champion)] if champion is not None else [])
    if task == "classification":
        if candidate.binary and candidate.proba is not None:
            positive = candidate.labels[1]
            for kind in ("roc", "pr"):
                fig, ax = plt.subplots(figsize=(4.5, 4))
                for name, scored in models:
                    if kind == "roc":
                        x, y, _ = m.roc_curve(target == positive, scored.proba[:, 1])
                    else:
                        y, x, _ = m.precision_recall_curve(target == positive, scored.proba[:, 1])
                    ax.plot(x, y, label=name)
                ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
                ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
                ax.set_title("ROC curve" if kind == "roc" else "Precision-recall curve")
                ax.legend()
                out[kind] = _png(fig)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        m.ConfusionMatrixDisplay.from_predictions(target, candidate.predicted, ax=ax, colorbar=False)
        ax.set_title("Candidate confusion matrix")
        out["confusion"] = _png(fig)
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for name, scored in models:
            ax.scatter(target, scored.predicted, s=3, alpha=0.3, label=name)
        low, high = float(np.min(target)), float(np.max(target))
        ax.plot([low, high], [low, high], color="black", linewidth=1)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title("Predicted vs actual")
        ax.legend()
        out["predicted_vs_actual"] = _png(fig)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for name, scored in models:
            ax.hist(scored.predicted - target, bins=60, alpha=0.5, label=name)
        ax.set_xlabel("residual (predicted - actual)")
        ax.set_title("Residuals")
        ax.legend()
        out["residuals"] = _png(fig)
    if distribution is not None and len(distribution):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.hist(distribution, bins=50, color="#6a8fd0")
        if interval:
            for bound in interval:
                ax.axvline(bound, color="black", linestyle="--", linewidth=1)
        if margin is not None:
            ax.axvline(margin, color="#c00", linewidth=1.5, label="margin")
            ax.legend()
        ax.set_title("Bootstrap: improvement over the champion")
        out["bootstrap"] = _png(fig)
    return out


def render(decision: dict[str, Any], images: dict[str, str]) -> str:
    rows = "".join(
        f"<tr class='{'ok' if c['passed'] else 'fail'}'><td>{'pass' if c['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(c['check'])}</td><td>{html.escape(str(c.get('limit', '')))}</td>"
        f"<td>{html.escape(c['reason'])}</td></tr>"
        for c in sorted(decision["checks"], key=lambda c: c["passed"])
    )
    metric_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td>"
        f"<td>{'' if not decision.get('champion_metrics') else format(decision['champion_metrics'].get(k, float('nan')), '.4f')}</td></tr>"
        for k, v in sorted(decision["candidate_metrics"].items())
    )
    figures = "".join(f"<img alt='{k}' src='data:image/png;base64,{v}'>" for k, v in images.items())
    verdict = "PASSED" if decision["passed"] else "FAILED"
    champion = decision.get("champion_version") or "none"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Gate {verdict}: {html.escape(decision["model"])} v{decision["candidate_version"]}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.fail td:first-child{{color:#b00;font-weight:bold}} tr.ok td:first-child{{color:#070}} img{{margin:4px}}</style>
</head><body>
<h1>Gate {verdict}: {html.escape(decision["model"])} v{decision["candidate_version"]} vs champion {champion}</h1>
<p>Pipeline <code>{html.escape(decision["pipeline"])}</code>, decision <code>{decision["id"]}</code>,
holdout of {decision["holdout_rows"]} rows. Both models were scored on this same holdout.</p>
<h2>Checks</h2><table><tr><th></th><th>check</th><th>limit</th><th>finding</th></tr>{rows}</table>
<h2>Metrics on the holdout</h2><table><tr><th>metric</th><th>candidate</th><th>champion</th></tr>{metric_rows}</table>
<h2>Plots</h2>{figures}
</body></html>"""
