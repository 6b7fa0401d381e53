"""Drift check cost and fidelity: ``drift.compare_window`` against Evidently on the full data.

Why: the drift check runs on a schedule over the recent scoring inputs, which can be millions of
rows. Evidently's ``Report([DataDriftPreset()])`` on the full frames holds both in memory and takes
minutes. Our check streams the window into bounded per-column summaries and runs Evidently's own
tests on them (``include/mlops/drift_stats.py``, ``docs/drift.md``). Targets: at least 10x faster,
a peak RSS no larger, and the same per-column verdicts as Evidently on the full data, except for
columns whose full-data statistic lies within 5% of its threshold (a coin flip either way).

How: everything runs in a throw-away folder.

* data (seeded, untimed): 20 columns, 10 numeric and 10 categorical, with nulls in two of them;
  a reference of ``rows`` rows and a current window of ``rows`` rows in 4 Parquet files (4 scored
  batches). Some columns drift clearly, some not at all, and a few lie near the 0.1 threshold
  (Wasserstein 0.092, 0.102 and 0.107; Jensen-Shannon 0.081, 0.092 and 0.113 at full size);
* training side (timed and reported, not in the ratio: it runs once per model version): the
  reference profile of all reference rows (``drift_stats.profile_frame``), saved as JSON, and a
  5,000-row reference sample, as ``training.train`` saves them;
* ours: ``drift.compare_window`` (load the profile and sample, stream the window, test every
  column, write Evidently's HTML + JSON report drawn on 5,000-row samples);
* baseline: what the check did before, ``pd.read_parquet`` of the reference and the window files,
  ``Report([DataDriftPreset()]).run`` on the full frames, HTML + JSON written.

Data preparation and each measurement run in their own fresh subprocess (``--child``), so no two
share a heap, and this parent process stays small (a child's ``ru_maxrss`` includes the image of
the process it was spawned from). The parent reads each child's peak RSS with ``os.wait4``; each
child also reports its own ``VmHWM`` as a cross-check. Each child times its imports (pandas,
pyarrow, Evidently and the project's modules: the same on both sides, a few seconds that do not
depend on the data) apart from its work; ``ratio`` is baseline work / ours work, and
``ratio_with_imports`` counts the imports on both sides. Ours runs 3 times (1 with ``--quick``)
and its median is used; the baseline runs once. ``--quick`` uses 20,000 rows a side (still more
than a summary keeps raw) and runs in under a minute; it checks that everything works and that
the verdicts agree, but its ratios mean little: at that size both sides are dominated by fixed
costs (imports, drawing the report). Verdicts are compared column by column: method, threshold, and drifted or not
(Evidently's rule: a p-value drifts below its threshold, a distance at or above). The share of
the machine's CPU used by other processes while measuring is reported: the machine may be shared.

Human-readable lines come first; the last line of output is one JSON object. The exit status is
non-zero only if the measurement itself failed, not on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import OtherLoad, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 10
TARGET_RSS_RATIO = 1.0
BAND = 0.05  # a verdict within 5% of the threshold may go either way
SAMPLE_ROWS = 5000
WINDOW_FILES = 4
SEED = 2026
SIZES = {"full": {"rows": 1_000_000, "repeats": 3}, "quick": {"rows": 20_000, "repeats": 1}}
DRIFT_SHARE = 0.5  # DataDriftPreset's default


def frame(rows: int, *, seed: int, drifted: bool) -> Any:
    """20 columns of a web-shop customer table; ``drifted`` shifts some of them by set amounts."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    d = 1.0 if drifted else 0.0

    def mix(before: list[float], after: list[float]) -> list[float]:
        return after if drifted else before

    regions = [f"r{i:02d}" for i in range(30)]
    region_p = np.linspace(1, 3, 30)
    region_p[:6] *= 1 + 0.9 * d
    return pd.DataFrame(
        {
            # numeric: Wasserstein distance (normed) at full size, threshold 0.1
            "amount": rng.lognormal(3 + 0.004 * d, 1, rows).round(2),  # ~0.005
            "balance": rng.normal(1000 + 500 * d, 1000, rows),  # ~0.50
            "score": rng.uniform(0, 10 + 0.8 * d, rows),  # ~0.14
            "wait_time": rng.exponential(1 + 0.108 * d, rows),  # ~0.107, borderline
            "latency": rng.exponential(1 + 0.101 * d, rows),  # ~0.102, inside the 5% band
            "bimodal": np.where(
                rng.random(rows) < 0.3 + 0.1 * d, rng.normal(-2, 0.5, rows), rng.normal(2, 1, rows)
            ),  # ~0.20
            "visits": rng.poisson(8 + 0.6 * d, rows).astype("int64"),  # ~0.22
            "age": np.clip(rng.normal(45 - 1.3 * d, 14, rows), 18, 90).round().astype("int64"),  # ~0.092
            "rating": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], rows, p=[0.1, 0.15, 0.3, 0.3, 0.15]),  # JS
            "income": np.where(
                rng.random(rows) < 0.05, np.nan, rng.gamma(2, 30 + 2.6 * d, rows).round(2)
            ),  # ~0.12, 5% nulls
            # categorical: Jensen-Shannon distance at full size, threshold 0.1
            "region": rng.choice(regions, rows, p=region_p / region_p.sum()),  # ~0.081
            "plan": rng.choice(["basic", "plus", "pro"], rows, p=mix([0.5, 0.3, 0.2], [0.3, 0.3, 0.4])),
            "browser": rng.choice(["a", "b", "c", "d", "e"], rows),
            "weekday": rng.integers(0, 7, rows).astype("int64"),  # an int with <= 10 values
            "is_mobile": rng.random(rows) < 0.3 + 0.125 * d,  # ~0.092
            "device": rng.choice(
                ["ios", "android", "web", "other"], rows, p=mix([0.3, 0.3, 0.3, 0.1], [0.22, 0.38, 0.3, 0.1])
            ),  # ~0.073
            "channel": rng.choice(
                ["ads", "organic", "referral"], rows, p=mix([0.6, 0.3, 0.1], [0.49, 0.3, 0.21])
            ),  # ~0.113
            "country": rng.choice([f"k{i:02d}" for i in range(12)], rows),
            "tier": rng.choice(["gold", "silver"], rows, p=mix([0.5, 0.5], [0.2, 0.8])),  # ~0.23
            "segment": np.where(
                rng.random(rows) < 0.1, None, rng.choice(["s1", "s2", "s3", "s4"], rows)
            ),  # 10% nulls
        }
    )


def child_prepare(workdir: Path, rows: int) -> dict[str, Any]:
    """Write the reference, the window files and the training-side reference artifacts."""
    from include.mlops.monitoring import drift_stats

    started = time.perf_counter()
    reference = frame(rows, seed=SEED, drifted=False)
    reference.to_parquet(workdir / "reference.parquet", index=False, row_group_size=100_000)
    current = frame(rows, seed=SEED + 1, drifted=True)
    window, size = [], -(-rows // WINDOW_FILES)
    (workdir / "window").mkdir(parents=True, exist_ok=True)
    for i in range(WINDOW_FILES):
        path = workdir / "window" / f"batch-{i}.parquet"
        current.iloc[i * size : (i + 1) * size].to_parquet(path, index=False, row_group_size=100_000)
        window.append(str(path))
    del current
    generated = time.perf_counter()
    profile = drift_stats.profile_to_json(drift_stats.profile_frame(reference), {})
    (workdir / "reference_profile.json").write_text(json.dumps(profile), encoding="utf-8")
    reference.sample(min(len(reference), SAMPLE_ROWS), random_state=SEED).to_parquet(
        workdir / "reference_sample.parquet", index=False
    )
    profiled = time.perf_counter()
    return {
        "window": window,
        "generate_s": generated - started,
        "profile_s": profiled - generated,
        "profile_mb": (workdir / "reference_profile.json").stat().st_size / 1e6,
    }


# ---------------------------------------------------------------------------------------------
# Children: one measurement each, in a fresh process
# ---------------------------------------------------------------------------------------------


def child_ours(workdir: Path, window: list[str], out: Path) -> dict[str, Any]:
    """Our path, timed in a fresh process so imports and work are measured apart."""
    started = time.perf_counter()
    import pandas as pd
    from evidently import Report  # noqa: F401  (the same imports as the baseline, timed apart)
    from evidently.presets import DataDriftPreset  # noqa: F401

    from include.mlops.monitoring import drift, drift_stats
    from include.mlops.monitoring.reference import Reference

    imported = time.perf_counter()
    features, predictions = drift_stats.profile_from_json(
        json.loads((workdir / "reference_profile.json").read_text(encoding="utf-8"))
    )
    reference = Reference(features, predictions, sample=pd.read_parquet(workdir / "reference_sample.parquet"))
    result = drift.compare_window(
        reference,
        inputs=window,
        outputs=[],
        fmt="parquet",
        folder=str(out),
        drift_share_threshold=DRIFT_SHARE,
        sample_rows=SAMPLE_ROWS,
        seed=SEED,
    )
    done = time.perf_counter()
    return {
        "import_s": imported - started,
        "work_s": done - imported,
        "columns": result.columns,
        "skipped": result.skipped_columns,
        "drift_share": result.drift_share,
        "rows": result.current_rows,
        "html_bytes": Path(result.report_html).stat().st_size,
    }


def child_baseline(workdir: Path, window: list[str], out: Path) -> dict[str, Any]:
    """Evidently's DataDriftPreset on the full frames: the baseline we must beat and agree with."""
    started = time.perf_counter()
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from include.mlops.monitoring.drift_report import column_decisions

    imported = time.perf_counter()
    reference = pd.read_parquet(workdir / "reference.parquet")
    current = pd.concat([pd.read_parquet(p) for p in window], ignore_index=True)
    columns = [c for c in reference.columns if c in current.columns]
    snapshot = Report([DataDriftPreset()]).run(
        current_data=current[columns], reference_data=reference[columns]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(snapshot.get_html_str(as_iframe=False), encoding="utf-8")
    (out / "report.json").write_text(snapshot.json(), encoding="utf-8")
    done = time.perf_counter()
    share = next(
        m["value"]["share"]
        for m in snapshot.dict()["metrics"]
        if "DriftedColumnsCount" in m["config"]["type"]
    )
    return {
        "import_s": imported - started,
        "work_s": done - imported,
        "columns": column_decisions(snapshot.dict()),
        "drift_share": float(share),
        "rows": len(current),
        "html_bytes": (out / "report.html").stat().st_size,
    }


def run_child(kind: str, workdir: Path, tag: str, *args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; add its peak RSS (from wait4) and wall time."""
    result_path, log_path = workdir / f"{tag}.json", workdir / f"{tag}.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--workdir",
        str(workdir),
        "--out",
        str(workdir / tag),
        "--result",
        str(result_path),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    wall = time.perf_counter() - started
    if process.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{tag} ({kind}) failed with exit status {process.returncode}:\n{tail}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["process_s"] = wall
    return result


# ---------------------------------------------------------------------------------------------
# Comparison and report
# ---------------------------------------------------------------------------------------------


def compare_verdicts(baseline: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Column by column: same method and threshold, and same verdict unless within the band."""
    rows, disagreements, in_band = [], [], []
    worst = 0.0
    for column, base in baseline.items():
        mine = ours.get(column)
        near = abs(base["value"] - base["threshold"]) <= BAND * base["threshold"]
        if near:
            in_band.append(column)
        if mine is None:
            disagreements.append(f"{column}: not checked by ours")
            continue
        relative = abs(mine["value"] - base["value"]) / max(abs(base["value"]), 1e-12)
        if not near:
            worst = max(worst, relative)
        same_test = mine["method"] == base["method"] and mine["threshold"] == base["threshold"]
        if not same_test:
            disagreements.append(f"{column}: method {mine['method']} vs {base['method']}")
        elif mine["drifted"] != base["drifted"] and not near:
            disagreements.append(f"{column}: drifted {mine['drifted']} vs {base['drifted']}")
        rows.append((column, base, mine, relative, near))
    extra = sorted(set(ours) - set(baseline))
    disagreements += [f"{c}: checked by ours only" for c in extra]
    return {
        "rows": rows,
        "agree": not disagreements,
        "disagreements": disagreements,
        "in_band": in_band,
        "max_rel_diff_outside_band": worst,
    }


def main() -> None:
    """Run both sides in child processes and print one JSON line with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows a side, ours once (under a minute)")
    parser.add_argument("--rows", type=int, default=None, help="rows per side (default: 1,000,000)")
    parser.add_argument("--child", choices=["prepare", "ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("window", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.child:
        if options.child == "prepare":
            result = child_prepare(options.workdir, int(options.window[0]))
        else:
            run = child_ours if options.child == "ours" else child_baseline
            result = run(options.workdir, options.window, options.out)
        result["own_peak_rss_mb"] = peak_rss_mb()
        options.result.write_text(json.dumps(result), encoding="utf-8")
        return

    sizes = dict(SIZES["quick" if options.quick else "full"])
    if options.rows:
        sizes["rows"] = options.rows
    rows, repeats = sizes["rows"], sizes["repeats"]
    started = time.perf_counter()
    from importlib.metadata import version

    # This process stays small (no data, no heavy imports): a child's ru_maxrss counts the image of
    # the process it was spawned from.
    print(
        f"drift bench: {rows:,} reference rows vs {rows:,} current rows in {WINDOW_FILES} files, "
        f"20 columns; ours x{repeats}, baseline x1, each in a fresh process; Python "
        f"{sys.version.split()[0]}, Evidently {version('evidently')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        workdir = Path(tmp)
        prepared = run_child("prepare", workdir, "prepare", str(rows))
        window = prepared["window"]
        print(
            f"setup: data generated in {prepared['generate_s']:.1f} s; training side: reference profile "
            f"of {rows:,} rows in {prepared['profile_s']:.1f} s ({prepared['profile_mb']:.1f} MB JSON)",
            flush=True,
        )
        load = OtherLoad()
        ours_runs = [run_child("ours", workdir, f"ours-{i}", *window) for i in range(repeats)]
        for i, run in enumerate(ours_runs):
            print(
                f"ours #{i + 1}: work {run['work_s']:.2f} s + imports {run['import_s']:.2f} s, "
                f"peak RSS {run['peak_rss_mb']:.0f} MB (VmHWM {run['own_peak_rss_mb']:.0f} MB)",
                flush=True,
            )
        baseline = run_child("baseline", workdir, "baseline", *window)
        print(
            f"baseline: work {baseline['work_s']:.2f} s + imports {baseline['import_s']:.2f} s, "
            f"peak RSS {baseline['peak_rss_mb']:.0f} MB (VmHWM {baseline['own_peak_rss_mb']:.0f} MB)",
            flush=True,
        )
        others = load.share()

    work = statistics.median(r["work_s"] for r in ours_runs)
    with_imports = statistics.median(r["work_s"] + r["import_s"] for r in ours_runs)
    ours_rss = max(r["peak_rss_mb"] for r in ours_runs)
    ratio = baseline["work_s"] / work
    ratio_with_imports = (baseline["work_s"] + baseline["import_s"]) / with_imports
    rss_ratio = ours_rss / baseline["peak_rss_mb"]
    verdicts = compare_verdicts(baseline["columns"], ours_runs[0]["columns"])
    stable = all(r["columns"] == ours_runs[0]["columns"] for r in ours_runs)

    print(f"{'column':10s} {'method':30s} {'baseline':>10s} {'ours':>10s} {'rel diff':>9s}  verdicts")
    for column, base, mine, relative, near in verdicts["rows"]:
        verdict = f"{'drift' if base['drifted'] else 'ok':5s} {'drift' if mine['drifted'] else 'ok':5s}"
        print(
            f"{column:10s} {base['method'][:30]:30s} {base['value']:10.5f} {mine['value']:10.5f} "
            f"{relative:9.1e}  {verdict}{'  (within 5% of the threshold)' if near else ''}"
        )
    print(
        f"drift share: baseline {baseline['drift_share']:.2f}, ours {ours_runs[0]['drift_share']:.2f}; "
        f"HTML report: baseline {baseline['html_bytes'] / 1e6:.1f} MB, ours {ours_runs[0]['html_bytes'] / 1e6:.1f} MB"
    )
    print(
        f"verdicts {'agree' if verdicts['agree'] else 'DISAGREE'} "
        f"({len(verdicts['in_band'])} column(s) within 5% of the threshold: {', '.join(verdicts['in_band']) or 'none'}); "
        f"largest relative difference outside the band {verdicts['max_rel_diff_outside_band']:.1e}; "
        f"ours identical across runs: {stable}"
    )
    for line in verdicts["disagreements"]:
        print(f"  disagreement: {line}")
    if others is not None:
        print(f"other processes used {others:.0%} of the machine's CPU while measuring")
    meets = ratio >= TARGET_RATIO and verdicts["agree"] and rss_ratio <= TARGET_RSS_RATIO
    print(
        f"ratio (baseline work / ours work): {ratio:.1f} (target >= {TARGET_RATIO}); with imports "
        f"{ratio_with_imports:.1f}; rss ratio (ours / baseline): {rss_ratio:.2f} -> "
        f"{'meets' if meets else 'MISSES'} targets"
    )
    print(f"bench wall time: {time.perf_counter() - started:.1f} s")
    print(
        json.dumps(
            {
                "bench": "drift",
                "rows": rows,
                "columns": 20,
                "ratio": round(ratio, 3),
                "decisions_agree": verdicts["agree"],
                "rss_ratio": round(rss_ratio, 4),
                "ratio_with_imports": round(ratio_with_imports, 3),
                "value": round(work, 4),
                "baseline": round(baseline["work_s"], 4),
                "unit": "s",
                "target": {"ratio": TARGET_RATIO, "rss_ratio": TARGET_RSS_RATIO, "band": BAND},
                "meets_target": meets,
                "ours_work_s": [round(r["work_s"], 4) for r in ours_runs],
                "ours_import_s": [round(r["import_s"], 4) for r in ours_runs],
                "baseline_import_s": round(baseline["import_s"], 4),
                "ours_peak_rss_mb": round(ours_rss, 1),
                "baseline_peak_rss_mb": round(baseline["peak_rss_mb"], 1),
                "ours_vmhwm_mb": max(r["own_peak_rss_mb"] or 0 for r in ours_runs),
                "baseline_vmhwm_mb": baseline["own_peak_rss_mb"],
                "profile_s": round(prepared["profile_s"], 4),
                "columns_in_band": verdicts["in_band"],
                "disagreements": verdicts["disagreements"],
                "max_rel_diff_outside_band": verdicts["max_rel_diff_outside_band"],
                "drift_share": {"baseline": baseline["drift_share"], "ours": ours_runs[0]["drift_share"]},
                "ours_stable_across_runs": stable,
                "other_cpu_share": None if others is None else round(others, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
