"""Validation of a large file: chunked (``chunked_validation.validate_file``) vs the whole DataFrame.

Why: ingestion validates every landed file with its Great Expectations suite. Loading a
10-million-row file whole and letting GE validate the DataFrame (the small-file path,
``tabular.read_frame`` + ``validation.validate_frame``) needs several times the file's size in
memory, because GE copies the frame while it computes metrics. The chunked path streams the file
and must reach the same verdict with a fraction of the memory and no more time. Targets: peak RSS
at most one quarter of the baseline's, wall time no worse than the baseline's, identical verdict
(overall and for every expectation).

How:

* data (untimed, generated once and cached under ``$TMPDIR/mlops-bench-validate/``): 10M rows x 20
  columns (1M with ``--quick``) of mixed types: an int64 id, a unique string account id, a
  timestamp, five categorical string columns, six integer and five float measures (one with 1%
  nulls), a boolean and a 0/1 label; written as Parquet with row groups of 500k rows
  (``--format csv``: a CSV file). ``--bad-tail`` breaks three rows at the very end (an id that
  repeats one of the first chunk, an out-of-range value, a value outside its set), so only the
  last chunk is bad;
* suite: 20 expectations of the common kinds: row count, not null, unique (int and string ids),
  between, in set, column types;
* baseline: a fresh child process reads the whole file (``read_frame``) and validates it with
  ``validate_frame``, the small-file path (``file_validation.validate_whole``: byte checks, columns, content
  rules, the suite); ours: a fresh child process runs ingestion's streamed path
  (``file_validation.validate_streamed``: the same checks, streamed, and ``validate_file``), in chunks of
  ``--chunk-rows`` (default the size ingestion uses: 500k rows for 20 columns);
* each child times itself from just before the read to just after the verdict (interpreter
  start-up and imports excluded, the same for both) and reports its peak RSS as ``VmHWM`` (the
  high-water mark of its own process image); ``ru_maxrss`` from ``os.wait4`` is printed next to it.
  The parent imports nothing heavy: on Linux a child's ``ru_maxrss`` starts from its parent's size
  at spawn time. Baseline and ours alternate ``--repeats`` times (1); medians are reported.

Both children import Great Expectations first (about 320 MB), so at the ``--quick`` size (1M rows,
two chunks) the memory ratio is dominated by that fixed cost; the targets are about the full size.

Human-readable lines come first; the last line of output is one JSON object with ``ratio`` (wall
time, ours / baseline), ``rss_ratio`` (peak RSS, ours / baseline) and ``same_verdict``. The exit
status is non-zero only if the measurement itself failed (a child crashed or printed no result),
not on a missed target. Run the full size alone on the machine (``flock /tmp/bench.lock ...``):
the baseline needs several GB.
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

from bench._harness import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"full": 10_000_000, "quick": 1_000_000}
ROW_GROUP = 500_000
TARGETS = {"ratio": 1.0, "rss_ratio": 0.25}
CACHE_VERSION = 3  # bump when the generated data changes
RESULT_PREFIX = "BENCH-CHILD-RESULT "
CATEGORIES = {
    "country": [f"c{i:02d}" for i in range(30)],
    "plan": ["free", "basic", "pro", "enterprise"],
    "channel": ["web", "ios", "android", "partner", "store"],
    "device": ["desktop", "mobile", "tablet"],
    "segment": ["a", "b", "c", "d", "e", "f"],
}


def suite(rows: int) -> dict[str, Any]:
    """Twenty expectations of the kinds a data contract usually holds."""
    between = {
        "age": (16, 110),
        "tenure_months": (0, 240),
        "visits": (0, 10_000),
        "clicks": (0, 100_000),
        "monthly_spend": (0, 10_000),
        "score": (0, 1),
    }
    expectations: list[dict[str, Any]] = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": rows * 2}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "row_id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "row_id"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "account_id"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "event_time"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "balance", "mostly": 0.95}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}},
        {"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "row_id", "type_": "int64"}},
        {"type": "expect_column_values_to_be_of_type", "kwargs": {"column": "score", "type_": "float64"}},
    ]
    expectations += [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": c, "min_value": lo, "max_value": hi},
        }
        for c, (lo, hi) in between.items()
    ]
    expectations += [
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": c, "value_set": values}}
        for c, values in CATEGORIES.items()
    ]
    return {"name": "bench-large", "expectations": expectations}


def bench_spec(columns: list[str], fmt: str) -> Any:
    """A pipeline spec for the generated table (what the content rules read: keys, target, features)."""
    from include.mlops.spec import parse_spec

    keys = {"row_id", "event_time", "label"}
    raw = {
        "name": "bench_large",
        "data": {
            "landing": "/tmp/mlops-bench-validate/landing",
            "format": fmt,
            "target": "label",
            "task": "classification",
            "id_column": "row_id",
            "timestamp_column": "event_time",
            "features": [c for c in columns if c not in keys],
        },
        "validation": {"suite": "bench-large.json"},
        "training": {"estimator": "sklearn.linear_model.LogisticRegression"},
        "evaluation": {"primary_metric": "roc_auc"},
        "inference": {"input": "/tmp/mlops-bench-validate/in", "output": "/tmp/mlops-bench-validate/out"},
    }
    return parse_spec(raw, "bench/validate_large.py")


def generate(path: Path, rows: int, fmt: str, *, bad_tail: bool) -> None:
    """Write the data set in row groups, one group at a time (the generator never holds it all)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    writer = None
    start = pd.Timestamp("2025-01-01")  # a past year: the content rules refuse future timestamps
    try:
        for offset in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - offset)
            rng = np.random.default_rng(offset)
            ids = np.arange(offset, offset + n, dtype=np.int64)
            balance = rng.normal(1000, 300, n).round(2)
            balance[rng.random(n) < 0.01] = np.nan
            frame = pd.DataFrame(
                {
                    "row_id": ids,
                    "account_id": [f"acct-{i:09d}" for i in ids],
                    "event_time": start + pd.to_timedelta(rng.integers(0, 365 * 86400, n), unit="s"),
                    **{c: rng.choice(values, n) for c, values in CATEGORIES.items()},
                    "age": rng.integers(18, 90, n),
                    "tenure_months": rng.integers(0, 200, n),
                    "visits": rng.poisson(20, n),
                    "clicks": rng.poisson(200, n),
                    "monthly_spend": rng.gamma(2.0, 40.0, n).round(2),
                    "score": rng.random(n),
                    "balance": balance,
                    "discount": rng.random(n).round(3),
                    "session_minutes": rng.exponential(12.0, n).round(1),
                    "zip_prefix": rng.integers(0, 1000, n),
                    "is_active": rng.random(n) < 0.8,
                    "label": (rng.random(n) < 0.3).astype(np.int64),
                }
            )
            if bad_tail and offset + n == rows:
                frame.loc[n - 3, "row_id"] = 7  # duplicates a row of the first chunk
                frame.loc[n - 2, "age"] = 250
                frame.loc[n - 1, "plan"] = "gold"
            if fmt == "csv":
                frame.to_csv(tmp, mode="a", header=offset == 0, index=False)
                continue
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
        if writer is not None:
            writer.close()
            writer = None
        tmp.rename(path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


def data_file(rows: int, fmt: str, *, bad_tail: bool) -> Path:
    """A cached generated data set, so repeated runs measure validation, not data generation."""
    folder = Path(tempfile.gettempdir()) / "mlops-bench-validate"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"v{CACHE_VERSION}-{rows}-{'bad' if bad_tail else 'good'}.{fmt}"
    if not path.exists():
        started = time.perf_counter()
        command = [sys.executable, __file__, "--child", "generate", "--file", str(path), "--format", fmt]
        command += ["--rows", str(rows), *(["--bad-tail"] if bad_tail else [])]
        subprocess.run(command, check=True, env=child_env())
        print(
            f"generated {path} ({path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.0f} s"
        )
    else:
        print(f"using cached {path} ({path.stat().st_size / 2**20:,.0f} MiB)")
    return path


def child(mode: str, path: str, fmt: str, rows: int, chunk_rows: int | None) -> None:
    """One measurement in this fresh process; prints one result line for the parent."""
    import logging
    import resource

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.WARNING)
    import great_expectations  # imported before the clock starts, as in a worker
    import pandas as pd
    import pyarrow

    from include.mlops.data import chunked_validation
    from include.mlops.data.file_validation import validate_streamed, validate_whole
    from include.mlops.data.reading import read_header
    from include.mlops.data.validation import ValidationOutcome, failure_report
    from include.mlops.errors import DataError

    uri = f"file://{path}"
    expectations = suite(rows)
    spec = bench_spec(list(map(str, read_header(uri, fmt).columns)), fmt)
    if chunk_rows:  # ingestion reads the chunk size from its environment setting
        os.environ[chunked_validation.CHUNK_ROWS_ENV] = str(chunk_rows)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:  # exactly what ingestion runs on each path: byte checks, structure, content rules, the suite
        if mode == "baseline":
            _, outcome = validate_whole(spec, uri, fmt, expectations)
        else:
            outcome = validate_streamed(spec, uri, fmt, expectations)
    except DataError as exc:
        outcome = ValidationOutcome(False, failure_report(str(exc)))
    seconds = time.perf_counter() - started
    result = outcome.result
    verdicts = [
        [r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column"), bool(r["success"])]
        for r in result["results"]
    ]
    counts = {
        f"{r['expectation_config']['type']}:{r['expectation_config']['kwargs'].get('column')}": (
            r.get("result") or {}
        ).get("unexpected_count", (r.get("result") or {}).get("observed_value"))
        for r in result["results"]
    }
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "mode": mode,
                "seconds": seconds,
                "success": bool(result["success"]),
                "verdicts": sorted(verdicts, key=lambda v: (v[0], str(v[1]))),
                "counts": counts,
                "failures": outcome.failures,
                "chunked": (result.get("meta") or {}).get("chunked"),
                "rss_before_kb": rss_before,
                "rss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "vm_hwm_mb": peak_rss_mb(),
                "versions": {
                    "great_expectations": great_expectations.__version__,
                    "pandas": pd.__version__,
                    "pyarrow": pyarrow.__version__,
                },
            },
            default=str,
        ),
        flush=True,
    )


def measure(mode: str, path: Path, fmt: str, rows: int, chunk_rows: int | None) -> dict[str, Any]:
    """Run one child; its own report plus its peak RSS as the kernel accounted it (``wait4``)."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--file",
        str(path),
        "--format",
        fmt,
        "--rows",
        str(rows),
    ]
    if chunk_rows:
        command += ["--chunk-rows", str(chunk_rows)]
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=child_env(), text=True)
        out = process.stdout.read()  # type: ignore[union-attr]
        process.stdout.close()  # type: ignore[union-attr]
        # wait4, not wait(): the rusage of this one child, whose ru_maxrss is its own peak RSS
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        errors.seek(0)
        err = errors.read()
    lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise SystemExit(f"{mode} child failed (exit {process.returncode}):\n{tail}")
    report = json.loads(lines[-1][len(RESULT_PREFIX) :])
    report["wait4_maxrss_mb"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    report["peak_rss_mb"] = report["vm_hwm_mb"] or usage.ru_maxrss / 1024
    report["process_wall_s"] = wall
    return report


def child_env() -> dict[str, str]:
    """The environment of a measured child: project importable, GX telemetry off."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        "GX_ANALYTICS_ENABLED": "False",
    }


def available_gib() -> float | None:
    """Free memory, to skip sizes the machine cannot hold instead of swapping."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def main() -> None:
    """Run each measurement in a child process and print one JSON line with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M rows (under a minute)")
    parser.add_argument(
        "--rows", type=int, default=None, help="rows in the data set (default 10M, --quick 1M)"
    )
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per chunk (default: as configured for ingestion, 500k rows for 20 columns)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="baseline/ours pairs to run (medians)")
    parser.add_argument("--bad-tail", action="store_true", help="break a few rows at the end of the file")
    parser.add_argument("--child", choices=["baseline", "ours", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    options = parser.parse_args()
    rows = options.rows or SIZES["quick" if options.quick else "full"]
    chunk_rows = options.chunk_rows  # None: the configured size, as ingestion uses it
    if options.child == "generate":
        generate(Path(options.file), rows, options.format, bad_tail=options.bad_tail)
        return
    if options.child:
        child(options.child, options.file, options.format, rows, chunk_rows)
        return

    # The parent stays small (no pandas, no GE): children are spawned from it, and on Linux a
    # child's ru_maxrss starts from its parent's size at spawn time.
    started = time.perf_counter()
    memory = available_gib()
    print(
        f"validate_large bench: {rows:,} rows x 20 columns, {options.format}, chunks of "
        f"{f'{chunk_rows:,} rows' if chunk_rows else 'the configured size'}, "
        f"{'bad tail' if options.bad_tail else 'good file'}, {options.repeats} pair(s); Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"{'?' if memory is None else f'{memory:.1f}'} GiB available"
    )
    path = data_file(rows, options.format, bad_tail=options.bad_tail)
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": []}
    for _ in range(options.repeats):
        for mode in ("baseline", "ours"):
            report = measure(mode, path, options.format, rows, chunk_rows)
            runs[mode].append(report)
            print(
                f"  {mode:8s} {report['seconds']:8.2f} s  peak RSS {report['peak_rss_mb']:8,.0f} MB "
                f"(wait4 {report['wait4_maxrss_mb']:,.0f} MB; {report['rss_before_kb'] / 1024:,.0f} MB after "
                f"imports)  verdict {'passed' if report['success'] else 'FAILED'}"
            )

    base_s = statistics.median(r["seconds"] for r in runs["baseline"])
    ours_s = statistics.median(r["seconds"] for r in runs["ours"])
    base_rss = statistics.median(r["peak_rss_mb"] for r in runs["baseline"])
    ours_rss = statistics.median(r["peak_rss_mb"] for r in runs["ours"])
    ratio, rss_ratio = ours_s / base_s, ours_rss / base_rss
    reference = runs["baseline"][0]
    same_verdict = all(
        r["success"] == reference["success"] and r["verdicts"] == reference["verdicts"]
        for r in runs["baseline"] + runs["ours"]
    )
    same_counts = all(r["counts"] == reference["counts"] for r in runs["ours"])
    chunked = runs["ours"][-1]["chunked"] or {}
    chunk_rows = chunked.get("chunk_rows", chunk_rows)
    versions = runs["ours"][-1]["versions"]
    print("Great Expectations {great_expectations}, pandas {pandas}, pyarrow {pyarrow}".format(**versions))
    meets = ratio <= TARGETS["ratio"] and rss_ratio <= TARGETS["rss_ratio"] and same_verdict
    print(
        f"baseline (read whole + validate_frame): median {base_s:.2f} s, peak RSS {base_rss:,.0f} MB; verdict "
        f"{'passed' if reference['success'] else 'FAILED'}"
    )
    print(
        f"ours (validate_file, {chunked.get('chunks')} chunks, {chunked.get('passes')} pass(es), "
        f"{len(chunked.get('fallbacks') or [])} whole-column fallback(s)): median {ours_s:.2f} s, peak RSS "
        f"{ours_rss:,.0f} MB"
    )
    if not reference["success"]:
        print(f"  failures (baseline): {'; '.join(reference['failures'])}")
        print(f"  failures (ours):     {'; '.join(runs['ours'][-1]['failures'])}")
    print(
        f"same verdict, overall and per expectation: {same_verdict}; same counts / observed values: {same_counts}"
    )
    print(
        f"ratio (wall, ours / baseline) {ratio:.3f} (target <= {TARGETS['ratio']}), rss_ratio {rss_ratio:.3f} "
        f"(target <= {TARGETS['rss_ratio']}) -> {'meets' if meets else 'MISSES'} targets"
    )
    print(f"bench wall time: {time.perf_counter() - started:.1f} s")
    print(
        json.dumps(
            {
                "bench": "validate_large",
                "rows": rows,
                "columns": 20,
                "format": options.format,
                "bad_tail": options.bad_tail,
                "chunk_rows": chunk_rows,
                "chunks": chunked.get("chunks"),
                "value": round(ours_s, 3),
                "baseline": round(base_s, 3),
                "unit": "s",
                "ratio": round(ratio, 3),
                "rss_mb": round(ours_rss, 1),
                "baseline_rss_mb": round(base_rss, 1),
                "rss_ratio": round(rss_ratio, 3),
                "same_verdict": same_verdict,
                "same_counts": same_counts,
                "verdict": "passed" if reference["success"] else "failed",
                "targets": TARGETS,
                "meets_target": meets,
                "repeats": options.repeats,
                "runs": {
                    mode: [
                        {"s": round(r["seconds"], 3), "rss_mb": round(r["peak_rss_mb"], 1)} for r in reports
                    ]
                    for mode, reports in runs.items()
                },
                "fallbacks": [f["expectation"] for f in chunked.get("fallbacks") or []],
            }
        )
    )


if __name__ == "__main__":
    main()
