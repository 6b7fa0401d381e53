"""Orchestration overhead: what a pipeline task costs on top of its work, through the real scheduler.

Why: the lifecycle's tasks do little work each (moving an alias, validating one small file), so the
fixed cost of a task (the scheduler's hop, the worker's fork, the imports of the libraries, the DAG
re-parse) decides how long the lifecycle takes. This bench keeps that cost in view.

How: the embedded default stack (``tools.stack.Stack``: SQLite, LocalExecutor, scheduler,
dag-processor, triggerer and API server as local processes) is started in a throw-away folder on
free ports, pointed at a temporary DAGs folder this bench writes:

* ``bench_orchestration``: a chain of 10 ``PingOperator`` tasks (the core's no-op ``ping``: it loads
  the spec and returns). ``value`` = wall seconds per task from the first task's start to the last
  task's end, over 10, read from the REST API (median of 3 runs after a warm-up run; 1 run with
  ``--quick``). ``baseline`` = the same core call, ``ping(pipeline)``, timed in this warm process;
  ``ratio`` = value / baseline.
* ``landing_to_validated_s``: a pipeline with ``data.trigger: event`` (the shipped churn spec with a
  2-s watcher poll); a file written atomically into its landing zone, until the Asset event of its
  published dataset (``mlops.<pipeline>.validated``).
* ``demo_s``: ``python -m tools.demo churn`` (the whole scenario; the virtualenv already built), run
  after this bench's stack is down. Skipped with ``--quick`` or ``--skip-demo``.

Run it alone (``flock /tmp/mlops-heavy.lock python bench/orchestration.py``): two stacks on two cores
measure each other. Human-readable lines first; the last line is one JSON object. The exit status
is non-zero only if the measurement failed, not on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench._harness import OtherLoad, peak_rss_mb
from tools.airflow_api import AirflowApi
from tools.stack import ADMIN, Stack, free_port

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = "landed"
CHAIN_DAG = "bench_orchestration"
TASKS = 10
TARGETS = {"value_s": 1.5, "demo_s": 150, "landing_to_validated_s": 10}
CHAIN_FILE = f'''"""Written by bench/orchestration.py: {TASKS} no-op pipeline tasks in a chain."""
from airflow.sdk import DAG, chain

from mlops_airflow.operators.ping import PingOperator

with DAG("{CHAIN_DAG}", schedule=None, max_active_runs=1, tags=["bench"]):
    chain(*[PingOperator(task_id=f"ping_{{i:02d}}", pipeline="{PIPELINE}") for i in range({TASKS})])
'''


def write_folders(root: Path) -> tuple[Path, Path]:
    """The pipelines folder (one event-driven copy of churn) and the DAGs folder (ours + the chain)."""
    pipelines, dags = root / "pipelines", root / "dags"
    pipelines.mkdir()
    dags.mkdir()
    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = PIPELINE
    raw["data"].update(landing=f"{{MLOPS_DATA_ROOT}}/landing/{PIPELINE}", trigger="event", poll_interval=2)
    raw["data"].pop("schedule", None)
    raw["inference"].update(
        input=f"{{MLOPS_DATA_ROOT}}/scoring/{PIPELINE}", output=f"{{MLOPS_DATA_ROOT}}/predictions/{PIPELINE}"
    )
    raw["registry"] = {"model_name": PIPELINE}
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    shutil.copy(ROOT / "dags" / "mlops_pipelines.py", dags / "mlops_pipelines.py")
    (dags / "bench_chain.py").write_text(CHAIN_FILE, encoding="utf-8")
    return pipelines, dags


def core_baseline(calls: int) -> float:
    """Median seconds of one ``ping(PIPELINE)`` in this (warm) process: the work a task does."""
    from include.mlops.ping import ping

    ping(PIPELINE)  # warm-up: imports, disk cache
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        ping(PIPELINE)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def chain_run(api: AirflowApi) -> dict[str, float]:
    """Trigger the chain once; seconds per task, and the medians of a task's run and of a hop."""
    run = api.wait_run(CHAIN_DAG, api.trigger(CHAIN_DAG), timeout=600)
    tis = sorted(api.task_instances(CHAIN_DAG, run["dag_run_id"]), key=lambda t: t["task_id"])
    if run["state"] != "success" or len(tis) != TASKS:
        states = {t["task_id"]: t["state"] for t in tis}
        log = api.task_log(CHAIN_DAG, run["dag_run_id"], tis[0]["task_id"]) if tis else ""
        raise SystemExit(f"chain run {run['state']}: {states}\n{log}")
    starts, ends = [_ts(t["start_date"]) for t in tis], [_ts(t["end_date"]) for t in tis]
    return {
        "per_task_s": (max(ends) - min(starts)) / TASKS,
        "task_s": statistics.median(e - s for s, e in zip(starts, ends, strict=True)),
        "hop_s": statistics.median(starts[i + 1] - ends[i] for i in range(TASKS - 1)),
    }


def landing_to_validated(api: AirflowApi, seed: int) -> float:
    """Write one batch atomically into the landing zone; seconds until its dataset's Asset event."""
    from include.mlops.datagen import write_batch
    from include.mlops.spec import find_spec

    asset = next(a for a in api.assets(f"mlops.{PIPELINE}.validated") if a["name"].endswith(".validated"))
    known = {e["id"] for e in api.asset_events(asset["id"])}
    started = time.time()
    write_batch(
        find_spec(PIPELINE), f"bench-{seed}", rows=1000, seed=seed, id_offset=seed * 10_000, dataset="churn"
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        fresh = [e for e in api.asset_events(asset["id"]) if e["id"] not in known]
        if fresh:
            return min(_ts(e["timestamp"]) for e in fresh) - started
        time.sleep(0.5)
    raise SystemExit(f"no {asset['name']} event within 300 s of the file landing")


def wait_watcher(api: AirflowApi, timeout: float = 180) -> None:
    """Until the landing Asset's watcher is registered (its DAG parsed, active and unpaused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(a["watchers"] for a in api.assets(f"mlops.{PIPELINE}.landed")):
            return
        time.sleep(1)
    raise SystemExit(f"no watcher on mlops.{PIPELINE}.landed within {timeout:.0f} s")


def stack_cpu_seconds(stack: Stack) -> float:
    """CPU seconds used so far by the stack's process groups (components, workers, reaped tasks).

    The components run in sessions of their own and are never waited for, so the harness would
    count their CPU as other processes' load; Linux ``/proc`` only (0 elsewhere).
    """
    groups = {int(p.read_text()) for p in stack.run_dir.glob("*.pid")}
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in groups:  # pgrp; then utime, stime, cutime, cstime (fields 14-17)
            total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def measure_stack(workdir: Path, runs: int, files: int) -> dict[str, Any]:
    """Start the stack in ``workdir``, time the chain ``runs`` times (+1 warm-up) and ``files`` landings."""
    _, dags = write_folders(workdir)
    stack = Stack(
        state=workdir / "state",
        airflow_port=free_port(),
        with_mlflow_ui=False,
        disable_schedules=True,
        dags_folder=dags,
    )
    os.environ["MLOPS_PIPELINES_DIR"] = str(workdir / "pipelines")
    os.environ.update(stack.env())
    started = time.perf_counter()
    try:
        stack.up()
        up_s = time.perf_counter() - started
        api = AirflowApi(stack.api_url, *ADMIN)
        api.wait_for_dags([CHAIN_DAG, f"{PIPELINE}__ingest", f"{PIPELINE}__train"])
        api.pause(f"{PIPELINE}__train")  # this bench stops at the published dataset
        warmup = chain_run(api) if runs > 1 else None
        chains = [chain_run(api) for _ in range(runs)]
        wait_watcher(api)
        landings = [landing_to_validated(api, seed=i + 1) for i in range(files)]
    finally:
        stack_cpu = stack_cpu_seconds(stack)
        stack.down()
    return {"up_s": up_s, "warmup": warmup, "chains": chains, "landings": landings, "stack_cpu": stack_cpu}


def demo_seconds() -> float:
    """Wall seconds of ``python -m tools.demo churn`` in a clean environment (venv already built)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", "churn"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"demo FAILED (exit {proc.returncode}); its output ends with:\n{proc.stdout[-3000:]}")
    return wall


def main() -> None:
    """Measure (see the module docstring) and print the report; the last line is JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 chain run, 1 file, no demo (under a minute)")
    parser.add_argument("--skip-demo", action="store_true", help="do not run the demo scenario")
    options = parser.parse_args()
    runs, files = (1, 1) if options.quick else (3, 2)
    started, load = time.perf_counter(), OtherLoad()
    with tempfile.TemporaryDirectory(prefix="bench-orchestration-") as tmp:
        measured = measure_stack(Path(tmp), runs, files)
        baseline = core_baseline(200)
    demo_s = None if options.quick or options.skip_demo else demo_seconds()
    others = load.share(detached_cpu=measured["stack_cpu"])
    result = report(measured, baseline, demo_s)
    print(f"other processes used {others:.0%} of the CPU meanwhile" if others is not None else "")
    print(f"bench wall time: {time.perf_counter() - started:.1f} s; peak RSS {peak_rss_mb() or 0:.0f} MB")
    print(json.dumps({**result, "other_load": None if others is None else round(others, 3)}))


def report(measured: dict[str, Any], baseline: float, demo_s: float | None) -> dict[str, Any]:
    """Print the human summary and return the JSON fields."""
    chains = measured["chains"]
    value = statistics.median(c["per_task_s"] for c in chains)
    landing = statistics.median(measured["landings"])
    print(
        f"orchestration bench: {TASKS} chained PingOperator tasks, {len(chains)} run(s); stack up in "
        f"{measured['up_s']:.1f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    if measured["warmup"]:
        print(f"warm-up run (not counted): {measured['warmup']['per_task_s']:.2f} s per task")
    for i, c in enumerate(chains):
        print(
            f"run {i + 1}: {c['per_task_s']:.2f} s per task (task itself {c['task_s']:.2f} s, "
            f"hop between tasks {c['hop_s']:.2f} s, medians)"
        )
    print(f"core call ping() in a warm process: {baseline * 1000:.2f} ms (baseline)")
    print(f"value: {value:.2f} s per task (target <= {TARGETS['value_s']}), ratio {value / baseline:.0f}")
    print(
        f"landing to validated: {', '.join(f'{x:.1f}' for x in measured['landings'])} s "
        f"(target <= {TARGETS['landing_to_validated_s']})"
    )
    print(
        f"demo: {demo_s:.0f} s (target <= {TARGETS['demo_s']})"
        if demo_s is not None
        else "demo: skipped (--quick or --skip-demo); run without them to time `python -m tools.demo churn`"
    )
    meets = value <= TARGETS["value_s"] and landing <= TARGETS["landing_to_validated_s"]
    meets = meets and (demo_s is None or demo_s <= TARGETS["demo_s"])
    return {
        "bench": "orchestration",
        "value": round(value, 3),
        "baseline": round(baseline, 6),
        "ratio": round(value / baseline, 1),
        "unit": "s/task",
        "task_s": round(statistics.median(c["task_s"] for c in chains), 3),
        "hop_s": round(statistics.median(c["hop_s"] for c in chains), 3),
        "landing_to_validated_s": round(landing, 2),
        "demo_s": None if demo_s is None else round(demo_s, 1),
        "stack_up_s": round(measured["up_s"], 1),
        "targets": TARGETS,
        "meets_targets": meets,
    }


if __name__ == "__main__":
    main()
