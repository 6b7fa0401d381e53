"""Small inline SVG charts (lines, scatter, histograms) for the HTML reports.

Why not matplotlib: rasterising four PNG figures cost the gate ~0.75 s on a 200k-row holdout,
about as much as scoring a model; these charts are plain SVG text, built in milliseconds, stay sharp
at any zoom and keep the report searchable. Only what the reports need is here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import cast

import numpy as np

WIDTH, HEIGHT = 420, 340
LEFT, RIGHT, TOP, BOTTOM = 56, 14, 30, 46
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
MAX_POINTS = 1_500  # per series: enough for the eye


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def thin(*arrays: np.ndarray, limit: int = MAX_POINTS) -> list[np.ndarray]:
    """Evenly spaced points (first and last kept) so at most ``limit`` are drawn."""
    n = len(arrays[0])
    if n <= limit:
        return [np.asarray(a) for a in arrays]
    index = np.unique(np.linspace(0, n - 1, limit).astype(np.int64))
    return [np.asarray(a)[index] for a in arrays]


class Chart:
    """One SVG chart: fixed size, linear axes, a legend for the named series."""

    def __init__(
        self,
        title: str,
        xlabel: str,
        ylabel: str,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
    ):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x0 + 0.5
        if self.y1 <= self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y0 + 0.5
        self.parts: list[str] = []
        self.legend: list[tuple[str, str]] = []

    def x(self, value: np.ndarray | float) -> np.ndarray | float:
        """Data to pixel coordinate on the x axis."""
        return LEFT + (value - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: np.ndarray | float) -> np.ndarray | float:
        """Data to pixel coordinate on the y axis (SVG's y grows downwards)."""
        return HEIGHT - BOTTOM - (value - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)

    def line(self, xs: np.ndarray, ys: np.ndarray, *, name: str = "", color: str = COLORS[0]) -> None:
        """A polyline (thinned, so a 200k-point curve stays a small SVG)."""
        xs, ys = thin(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
        points = " ".join(
            f"{a:.1f},{b:.1f}"
            for a, b in zip(cast(np.ndarray, self.x(xs)), cast(np.ndarray, self.y(ys)), strict=True)
        )
        self.parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{points}"/>')
        if name:
            self.legend.append((name, color))

    def scatter(self, xs: np.ndarray, ys: np.ndarray, *, name: str = "", color: str = COLORS[0]) -> None:
        """Semi-transparent dots (thinned), so dense regions read as darker."""
        xs, ys = thin(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
        dots = "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.6"/>'
            for a, b in zip(cast(np.ndarray, self.x(xs)), cast(np.ndarray, self.y(ys)), strict=True)
        )
        self.parts.append(f'<g fill="{color}" fill-opacity="0.35">{dots}</g>')
        if name:
            self.legend.append((name, color))

    def bars(self, edges: np.ndarray, counts: np.ndarray, *, name: str = "", color: str = COLORS[0]) -> None:
        """Histogram bars from bin edges and counts."""
        base = self.y(0.0)
        rects = "".join(
            f'<rect x="{self.x(lo):.1f}" y="{self.y(c):.1f}" width="{max(self.x(hi) - self.x(lo), 0.5):.1f}" '
            f'height="{base - self.y(c):.1f}"/>'
            for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
            if c > 0
        )
        self.parts.append(f'<g fill="{color}" fill-opacity="0.55">{rects}</g>')
        if name:
            self.legend.append((name, color))

    def vline(self, value: float, *, name: str = "", color: str = "#000", dashed: bool = False) -> None:
        """A vertical marker (interval bounds, the margin) with an optional legend entry."""
        if not self.x0 <= value <= self.x1:
            return
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        x = self.x(value)
        self.parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{color}"{dash}/>'
        )
        if name:
            self.legend.append((name, color))

    def segment(self, a: tuple[float, float], b: tuple[float, float], color: str = "#999") -> None:
        """A reference line such as the diagonal of a ROC chart."""
        self.parts.append(
            f'<line x1="{self.x(a[0]):.1f}" y1="{self.y(a[1]):.1f}" x2="{self.x(b[0]):.1f}" '
            f'y2="{self.y(b[1]):.1f}" stroke="{color}" stroke-dasharray="3 3"/>'
        )

    def svg(self) -> str:
        """The chart as inline SVG: axes, ticks, parts and legend."""
        axes = [
            f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
            'fill="none" stroke="#444"/>'
        ]
        for t in _ticks(self.x0, self.x1):
            x = self.x(t)
            axes.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}" stroke="#444"/>'
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_label(t)}</text>'
            )
        for t in _ticks(self.y0, self.y1):
            y = self.y(t)
            axes.append(
                f'<line x1="{LEFT - 4}" x2="{LEFT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#444"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(t)}</text>'
            )
        legend = "".join(
            f'<rect x="{LEFT + 8}" y="{TOP + 8 + 16 * i}" width="10" height="10" fill="{color}"/>'
            f'<text x="{LEFT + 22}" y="{TOP + 17 + 16 * i}">{html.escape(name)}</text>'
            for i, (name, color) in enumerate(self.legend)
        )
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" role="img">'
            f"<title>{html.escape(self.title)}</title>"
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(self.title)}</text>'
            + "".join(axes)
            + "".join(self.parts)
            + legend
            + f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(self.xlabel)}</text>'
            f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
            f"{html.escape(self.ylabel)}</text></svg>"
        )


def histogram(
    title: str,
    xlabel: str,
    series: Sequence[tuple[str, np.ndarray]],
    *,
    bins: int = 50,
    markers: Sequence[tuple[str, float, str, bool]] = (),
) -> str:
    """Overlaid histograms on shared bins; markers are (name, x, color, dashed) vertical lines."""
    values = [np.asarray(v, dtype=float) for _, v in series]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([0.0])
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    for _, x, _, _ in markers:
        low, high = min(low, x), max(high, x)
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    counts = [np.histogram(v[np.isfinite(v)], bins=edges)[0] for v in values]
    top = max((int(c.max()) for c in counts if len(c)), default=1) or 1
    chart = Chart(title, xlabel, "count", (float(edges[0]), float(edges[-1])), (0.0, top * 1.08))
    for i, ((name, _), c) in enumerate(zip(series, counts, strict=True)):
        chart.bars(edges, c, name=name, color=COLORS[i % len(COLORS)])
    for name, x, color, dashed in markers:
        chart.vline(x, name=name, color=color, dashed=dashed)
    return chart.svg()
