"""Scale-out: batch scoring throughput with two Celery workers against one, on the production stack.

Why: the inference DAG maps one ``score`` task per partition so that partitions score in parallel on
as many workers as there are. This bench checks that a second worker (a second "host") really adds
throughput through the real scheduler, broker and object store, and that where a partition is scored
does not change its predictions. Target: ``value`` >= 1.6 on 2 cores.

How: the native production stack (``tools.prod_stack.ProdStack``: Postgres, Redis, moto's S3, an
MLflow server, Airflow with the CeleryExecutor) is started in a throw-away folder on free ports,
with schedules off and **one** Celery worker.

1. The short path of the scenario (``tools.scenario.run_short_path``: ingest, train, gate, promote,
   score) gives the ``churn`` pipeline a champion (its HistGradientBoosting model); then every other
   DAG of the pipeline is paused and the short path's scoring batch removed.
2. N seeded scoring partitions are written to ``inference.input`` on the object store: 8 files of
   1,000,000 rows (``--quick``: 4 of 200,000), so that a partition scores for several seconds
   against a task's fixed cost of a few (the hop through scheduler and broker, the task process,
   loading the pinned model from MLflow).
3. ``churn__inference`` is triggered with ``rescore`` on one worker; the predictions' content is
   hashed per partition. A second worker (``worker-2``: its own folders, as ``up`` would start it)
   is started and the same run is made again. Each partition's ``predictions.parquet`` must hold the
   same id, ``prediction`` and ``probability`` columns (SHA-256 of the columns) and the same row
   count in both runs, or the bench fails. The first run's outputs are deleted before the second, so
   that both write every output afresh.

Throughput = rows scored / seconds from the first ``score`` task's start to the last one's end (the
scoring phase; the run's own fixed tasks, ``partitions``, ``resolve`` and ``collect``, do not scale
and are reported apart as ``run_ratio``, from the runs' start and end). ``value`` = throughput with
two workers / throughput with one; ``baseline`` = rows/s with one worker; ``ratio`` = ``value``.

One slot per worker (``worker_concurrency`` 1) and ``OMP_NUM_THREADS=1`` in the workers: a worker
stands for a host with one core, so one worker scores one partition at a time on one core and two
workers on two. With more slots per worker (the stack's default is 2) or OpenMP's default of a
thread per core, one worker alone already uses both of this machine's cores and the figure would
measure nothing about adding a host. The pipeline's ``inference.parallelism`` (4) and Airflow's
``[core] parallelism`` (32) are above the two slots, so the workers are the only limit.

The machine's CPU busy share during each run and the share taken by processes other than this
bench and its stack are reported (the control plane, MLflow, moto and Postgres share the same two
cores with the workers). Run it alone (``flock /tmp/mlops-heavy.lock python bench/scale.py``).
Human-readable lines first; the last line is one JSON object. The exit status is non-zero if the
measurement failed or the predictions differ, not on a missed target.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._harness import OtherLoad, machine_busy, peak_rss_mb
from bench.orchestration import stack_cpu_seconds
from tools.airflow_api import AirflowApi
from tools.prod_stack import ProdStack
from tools.stack import free_port

PIPELINE = "churn"
INFERENCE_DAG = f"{PIPELINE}__inference"
TARGET = 1.6
SIZES = {"full": {"partitions": 8, "rows": 1_000_000}, "quick": {"partitions": 4, "rows": 200_000}}
HASHED = ("prediction", "probability")  # with the spec's id column


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# The second worker -------------------------------------------------------------------------------
def start_worker(stack: ProdStack, index: int, env: dict[str, str], timeout: float = 180) -> None:
    """Start Celery worker ``index`` as ``ProdStack.up`` starts its workers, and wait for its ping.

    ``ProdStack`` starts its ``workers`` at ``up`` only; this adds one to a running stack (its PID
    file in the stack's run folder, so that ``down`` stops it too).
    """
    name = stack.worker_name(index)
    stack.start_worker_process(index, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in stack.running():
            log = stack.run_dir / f"{name}.log"
            raise SystemExit(f"{name} exited at start-up:\n{log.read_text(errors='replace')[-3000:]}")
        if name in stack.celery_workers():
            return
        time.sleep(2)
    raise SystemExit(f"{name} did not answer a Celery ping within {timeout:.0f} s")


# Data and results ---------------------------------------------------------------------------------
def prepare_partitions(partitions: int, rows: int) -> int:
    """Replace the scoring input by ``partitions`` seeded files of ``rows`` rows; total rows."""
    from include.mlops import storage
    from include.mlops.datagen import write_batch
    from include.mlops.spec import find_spec

    spec = find_spec(PIPELINE)
    for uri in storage.list_files(spec.uri("scoring")):  # the short path's small batch
        fs, path = storage.fs_for(uri)
        fs.rm(path)
    for i in range(partitions):
        write_batch(
            spec, f"part-{i:03d}", rows=rows, seed=1000 + i, id_offset=10_000_000 * (i + 1), scoring=True
        )
    return partitions * rows


def prediction_digests() -> dict[str, dict[str, Any]]:
    """Per partition (output folder name): rows, model version and SHA-256 of id + prediction columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.mlops import storage
    from include.mlops.scoring.partitions import PREDICTIONS_FILE, output_folder, read_manifest
    from include.mlops.spec import find_spec

    spec = find_spec(PIPELINE)
    digests = {}
    for uri in storage.list_files(spec.uri("scoring")):
        folder = output_folder(spec, uri)
        manifest = read_manifest(folder)
        if manifest is None:
            raise SystemExit(f"{folder}: no complete output (_SUCCESS) after a successful run")
        with storage.open_binary(storage.join(folder, PREDICTIONS_FILE)) as handle:
            table = pq.read_table(handle)
        columns = [spec.data.id_column or "row_id", *HASHED]
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.select(columns).schema) as writer:
            writer.write_table(table.select(columns).combine_chunks())
        digests[storage.basename(folder)] = {
            "rows": table.num_rows,
            "manifest_rows": manifest["rows"],
            "model_version": manifest["model_version"],
            "seconds": manifest["seconds"],
            "sha256": hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest(),
        }
    return digests


def remove_predictions() -> None:
    """Delete every output of the pipeline, so that the next run writes them as the first did."""
    from include.mlops import storage
    from include.mlops.spec import find_spec

    storage.remove_tree(find_spec(PIPELINE).uri("predictions"))


def score_run(api: AirflowApi, label: str) -> dict[str, Any]:
    """Trigger the inference DAG with ``rescore``; timings of the run and of its ``score`` tasks."""
    busy, started = machine_busy(), time.perf_counter()
    run_id = api.trigger(INFERENCE_DAG, {"rescore": True})
    run = api.wait_run(INFERENCE_DAG, run_id, timeout=1800)
    wall = time.perf_counter() - started
    after = machine_busy()
    tis = api.task_instances(INFERENCE_DAG, run_id)
    if run["state"] != "success":
        states = {f"{t['task_id']}[{t.get('map_index', -1)}]": t["state"] for t in tis}
        failed = next((t for t in tis if t["state"] == "failed"), None)
        log = ""
        if failed is not None:
            log = api.task_log(INFERENCE_DAG, run_id, failed["task_id"], failed.get("try_number") or 1)
        raise SystemExit(f"{label}: inference run {run['state']}: {states}\n{log}")
    scores = [t for t in tis if t["task_id"] == "score"]
    starts, ends = [_ts(t["start_date"]) for t in scores], [_ts(t["end_date"]) for t in scores]
    hosts: dict[str, int] = {}
    for t in scores:
        hosts[t.get("hostname") or "?"] = hosts.get(t.get("hostname") or "?", 0) + 1
    waits = [_ts(t["start_date"]) - _ts(t["queued_when"]) for t in scores if t.get("queued_when")]
    cpus = os.cpu_count() or 1
    origin = min(starts)
    timeline = [
        (
            t.get("hostname") or "?",
            _ts(t["queued_when"]) - origin if t.get("queued_when") else None,
            s - origin,
            e - origin,
        )
        for t, s, e in sorted(zip(scores, starts, ends, strict=True), key=lambda x: x[1])
    ]
    return {
        "timeline": timeline,
        "run_id": run_id,
        "run_s": _ts(run["end_date"]) - _ts(run["start_date"]),
        "score_span_s": max(ends) - min(starts),
        "task_s": statistics.median(e - s for s, e in zip(starts, ends, strict=True)),
        "queued_to_start_s": statistics.median(waits) if waits else None,
        "tasks": len(scores),
        "retries": sum(1 for t in scores if (t.get("try_number") or 1) > 1),
        "hosts": hosts,
        "busy_share": None if busy is None or after is None else (after - busy) / (wall * cpus),
    }


# The measurement ----------------------------------------------------------------------------------
def measure(workdir: Path, partitions: int, rows: int) -> dict[str, Any]:
    """Start the stack with one worker, get a champion, score on one worker, then on two."""
    from tools.scenario import run_short_path, summary

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: one core per "host" (docstring)
    stack = ProdStack(
        state=workdir,
        airflow_port=free_port(),
        mlflow_port=free_port(),
        disable_schedules=True,
        workers=1,
        worker_concurrency=1,
    )
    out: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        stack.up()
        out["up_s"] = time.perf_counter() - started
        second_env = stack.worker_env(2)  # as worker-1's: taken before the driver's environment changes
        os.environ.update(stack.env())  # the driver sees the same object store, MLflow and store
        api = AirflowApi(stack.api_url, *stack.admin)
        started = time.perf_counter()
        short = run_short_path(api, PIPELINE, rows=4000)
        if short.failures:
            raise SystemExit(f"the short path failed: {short.failures}\n{summary([short])}")
        out["champion_s"] = time.perf_counter() - started
        out["champion"] = short.facts.get("v1")
        for dag_id in api.dag_ids():
            if dag_id.startswith(f"{PIPELINE}__") and dag_id != INFERENCE_DAG:
                api.pause(dag_id)
        started = time.perf_counter()
        out["rows"] = prepare_partitions(partitions, rows)
        out["write_s"] = time.perf_counter() - started
        out["one"] = score_run(api, "one worker")
        out["one_digests"] = prediction_digests()
        remove_predictions()  # both runs write fresh outputs: a re-score also replaces the old ones
        start_worker(stack, 2, second_env)
        out["two"] = score_run(api, "two workers")
        out["two_digests"] = prediction_digests()
    finally:
        out["stack_cpu"] = stack_cpu_seconds(stack)
        stack.down()
    return out


def compare(one: dict[str, dict[str, Any]], two: dict[str, dict[str, Any]], partitions: int) -> list[str]:
    """Differences between the two runs' per-partition results (empty: identical)."""
    problems = []
    if set(one) != set(two) or len(one) != partitions:
        problems.append(f"partitions differ: {sorted(one)} vs {sorted(two)} (expected {partitions})")
    for name in sorted(set(one) & set(two)):
        a, b = one[name], two[name]
        for key in ("rows", "manifest_rows", "model_version", "sha256"):
            if a[key] != b[key]:
                problems.append(f"{name}: {key} {a[key]} (one worker) != {b[key]} (two workers)")
    return problems


def report(measured: dict[str, Any], others: float | None) -> dict[str, Any]:
    """Print the human summary and return the JSON fields."""
    rows, one, two = measured["rows"], measured["one"], measured["two"]
    rate1, rate2 = rows / one["score_span_s"], rows / two["score_span_s"]
    value, run_ratio = rate2 / rate1, one["run_s"] / two["run_s"]
    per_partition = statistics.median(d["seconds"] for d in measured["one_digests"].values())
    print(
        f"scale bench: {one['tasks']} partitions x {rows // one['tasks']:,} rows of {PIPELINE} (champion "
        f"v{measured['champion']}); {os.cpu_count()} CPUs; stack up in {measured['up_s']:.0f} s, champion "
        f"in {measured['champion_s']:.0f} s, partitions written in {measured['write_s']:.0f} s"
    )
    for label, r, rate in (("one worker ", one, rate1), ("two workers", two, rate2)):
        print(
            f"{label}: scoring phase {r['score_span_s']:.1f} s ({rate:,.0f} rows/s), run {r['run_s']:.1f} s; "
            f"a score task {r['task_s']:.1f} s (median), queued->running {r['queued_to_start_s'] or 0:.1f} s; "
            f"hosts {r['hosts']}; retries {r['retries']}; machine CPU busy "
            f"{'?' if r['busy_share'] is None else format(r['busy_share'], '.0%')}"
        )
    for label, r in (("one worker", one), ("two workers", two)):
        print(f"{label}, score tasks (host: queued -> start -> end, s from the first start):")
        for host, queued, start, end in r["timeline"]:
            print(f"  {host}: {'?' if queued is None else format(queued, '.1f')} -> {start:.1f} -> {end:.1f}")
    print(
        f"scoring inside a task (manifest `seconds`, one worker): {per_partition:.1f} s per partition; "
        f"the rest of a task ({one['task_s'] - per_partition:.1f} s) is its fixed cost"
    )
    print(f"per-partition predictions identical in both runs: {len(measured['one_digests'])} partitions")
    print(f"value: {value:.2f}x (target >= {TARGET}); whole runs {run_ratio:.2f}x")
    return {
        "bench": "scale",
        "value": round(value, 3),
        "baseline": round(rate1),
        "ratio": round(value, 3),
        "unit": "x (rows/s two workers / one)",
        "two_workers_rows_per_s": round(rate2),
        "run_ratio": round(run_ratio, 3),
        "partitions": one["tasks"],
        "rows": rows,
        "score_span_s": {"one": round(one["score_span_s"], 1), "two": round(two["score_span_s"], 1)},
        "task_s": {"one": round(one["task_s"], 2), "two": round(two["task_s"], 2)},
        "scoring_in_task_s": round(per_partition, 2),
        "hosts": {"one": one["hosts"], "two": two["hosts"]},
        "busy_share": {
            k: None if r["busy_share"] is None else round(r["busy_share"], 3)
            for k, r in (("one", one), ("two", two))
        },
        "identical": True,
        "target": TARGET,
        "meets_target": value >= TARGET,
        "other_load": None if others is None else round(others, 3),
    }


def main() -> None:
    """Measure (see the module docstring) and print the report; the last line is JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 partitions of 200,000 rows")
    parser.add_argument("--partitions", type=int, help="number of partitions (default 8; --quick 4)")
    parser.add_argument("--rows", type=int, help="rows per partition (default 1,000,000; --quick 200,000)")
    options = parser.parse_args()
    size = SIZES["quick" if options.quick else "full"]
    partitions, rows = options.partitions or size["partitions"], options.rows or size["rows"]
    started, load = time.perf_counter(), OtherLoad()
    # Under the system temp folder, readable by all: Postgres runs as `postgres` when we are root.
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    workdir.chmod(0o755)
    try:
        measured = measure(workdir, partitions, rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    problems = compare(measured["one_digests"], measured["two_digests"], partitions)
    if problems:
        print("FAILED: the predictions differ between one and two workers:\n" + "\n".join(problems))
        sys.exit(1)
    others = load.share(detached_cpu=measured["stack_cpu"])
    result = report(measured, others)
    print(f"other processes used {others:.0%} of the CPU meanwhile" if others is not None else "")
    print(f"bench wall time: {time.perf_counter() - started:.1f} s; peak RSS {peak_rss_mb() or 0:.0f} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
