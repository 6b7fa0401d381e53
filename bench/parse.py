"""DAG parse cost: 20 pipeline specs -> 140 DAGs, parsed by Airflow's ``DagBag``.

Why: Airflow's DAG processor re-parses ``dags/`` over and over, so what the spec-driven factory adds
on top of the unavoidable ``import airflow.sdk`` must stay small as pipelines are added.

How: timings are taken *inside* fresh child interpreters with ``time.perf_counter`` (interpreter
start-up excluded), sharing one throw-away ``AIRFLOW_HOME`` and SQLite database:

* child A: ``import airflow.sdk``                             -> t_import (the baseline);
* child B: ``import airflow.sdk``, then fill a DagBag from dags/ -> t_import, t_parse.

Before the parse child B calls ``gc.freeze()``, as Airflow's DAG processor does before it forks
its parsers: otherwise one full collection over Airflow's own ~200k objects lands inside the timed
parse and measures Airflow's heap, not the DAG files.

A and B alternate N times (5; 2 with ``--quick``) after one untimed warm-up of B; medians are reported.
``--profile`` also runs child B once under cProfile and prints the top cumulative hotspots.
Human-readable lines come first; the last line of output is one JSON object. The exit status is
non-zero only if the measurement itself failed (import errors, wrong DAG count), not on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tools.heavy_modules import heavy_modules

ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = ROOT / "dags"
EXAMPLE_SPECS = (
    ROOT / "include" / "pipelines" / "churn.yaml",
    ROOT / "include" / "pipelines" / "housing.yaml",
)
SPECS = 20
DAGS_PER_SPEC = 7
EXPECTED_DAGS = SPECS * DAGS_PER_SPEC
TARGETS = {"ms_per_dag": 10, "folder_s": 0.5}
# Must not be imported while parsing our DAGs (Airflow's own imports, such as fsspec, are measured apart).
HEAVY = tuple(m for m in heavy_modules() if m != "google.cloud")  # pyproject.toml's banned list
# `google.cloud` itself is pre-imported (namespace package, via a .pth file); only its submodules count.
HEAVY_PREFIXES = ("google.cloud.",)
PROFILE_TOP = 10
OUR_CODE = tuple(str(ROOT / part) + os.sep for part in ("plugins", "include", "dags"))

# Run as `python -c _CHILD <mode> <result.json> <dags folder> <expected dags> <heavy,...> <prefix,...>`.
# Only `sys` and `time` are imported before the timed import, as in a bare interpreter.
_CHILD = """
import sys, time

mode, out, dag_folder, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
heavy, prefixes = tuple(sys.argv[5].split(",")), tuple(sys.argv[6].split(","))

def heavy_loaded():
    return {m if m.startswith(prefixes) else m.split(".")[0]
            for m in sys.modules if m.split(".")[0] in heavy or m.startswith(prefixes)}

t0 = time.perf_counter()
import airflow.sdk
result = {"t_import": time.perf_counter() - t0}
if mode != "import":
    before = heavy_loaded()
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    result["t_dagbag_module"] = time.perf_counter() - t0
    import gc
    gc_time, gc_start = [0.0, 0.0, 0.0], [0.0]
    def on_gc(phase, info):
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_time[info["generation"]] += time.perf_counter() - gc_start[0]
    gc.callbacks.append(on_gc)
    gc.freeze()  # as Airflow's DAG processor does before it parses (dag_processing/manager.py)
    if mode == "profile":
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=dag_folder)
    result["t_parse"] = time.perf_counter() - t0
    gc.callbacks.remove(on_gc)
    result["t_gc"], result["t_gc_full"] = sum(gc_time), gc_time[2]
    if mode == "profile":
        profiler.disable()
        profiler.dump_stats(out + ".prof")
    result["dags"] = len(bag.dags)
    result["heavy_at_import"] = sorted(before)
    result["heavy_modules"] = sorted(heavy_loaded() - before)
    if bag.import_errors or len(bag.dags) != expected:
        for path, error in bag.import_errors.items():
            print(f"import error in {path}:\\n{error}", file=sys.stderr)
        sys.exit(f"expected {expected} DAGs and no import errors, got {len(bag.dags)} DAGs")
import json
with open(out, "w") as f:
    json.dump(result, f)
"""


def write_specs(folder: Path, count: int) -> None:
    """Copies of the example specs, renamed ``<example>_00`` ...; every other field is kept."""
    per_example = count // len(EXAMPLE_SPECS)
    for source in EXAMPLE_SPECS:
        text = source.read_text(encoding="utf-8")
        base = source.stem
        for i in range(per_example):
            name = f"{base}_{i:02d}"
            renamed, hits = re.subn(r"^name:.*$", f"name: {name}", text, count=1, flags=re.MULTILINE)
            if hits != 1:
                raise SystemExit(f"{source}: no top-level `name:` line to rename")
            (folder / f"{name}.yaml").write_text(renamed, encoding="utf-8")


def child_env(home: Path, specs: Path) -> dict[str, str]:
    """The caller's environment minus its Airflow/MLOps settings, pointed at throw-away state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'plugins'}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        MLOPS_PIPELINES_DIR=str(specs),
        MLOPS_STATE_DIR=str(home / "state"),
        MLOPS_DATA_ROOT=str(home / "state" / "data"),
        GX_ANALYTICS_ENABLED="False",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def run_child(mode: str, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Run one child interpreter (mode: import, parse or profile) and return what it measured."""
    out = workdir / f"result-{mode}.json"
    out.unlink(missing_ok=True)
    args = [mode, str(out), str(DAGS_FOLDER), str(EXPECTED_DAGS), ",".join(HEAVY), ",".join(HEAVY_PREFIXES)]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"child ({mode}) failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def print_profile(stats_file: Path) -> None:
    """Top cumulative hotspots of the DagBag fill: our code, Airflow's own, other libraries.

    The frames that merely lead into the DAG file (DagBag, importer, importlib) are left out of
    the last two lists, since their cumulative time is the whole parse.
    """
    import pstats

    stats = pstats.Stats(str(stats_file))
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = max(row[3] for row in table.values())
    # The callers of a DAG file's module body whose time includes all of it, and their callers.
    pending = [f for f in table if f[0].startswith(str(DAGS_FOLDER) + os.sep) and f[2] == "<module>"]
    floor = 0.99 * min((table[f][3] for f in pending), default=total)
    wrappers: set[tuple[str, int, str]] = set()
    while pending:
        for caller in table[pending.pop()][4]:
            if caller not in wrappers and caller in table and table[caller][3] >= floor:
                wrappers.add(caller)
                pending.append(caller)

    def group(func: tuple[str, int, str]) -> str | None:
        path = func[0]
        if path.startswith(OUR_CODE):
            return "our code (dags/, plugins/, include/)"
        if func in wrappers or path == "~" or path.startswith("<frozen"):
            return None
        return "Airflow" if f"{os.sep}airflow{os.sep}" in path or "airflow." in path else "other libraries"

    groups: dict[str, list[tuple[tuple[str, int, str], tuple[Any, ...]]]] = {}
    for func, row in sorted(table.items(), key=lambda item: item[1][3], reverse=True):
        name = group(func)
        if name:
            groups.setdefault(name, []).append((func, row))
    print(f"profile: {total:.3f} s under cProfile (pure-Python code is slowed down the most)")
    for name in ("our code (dags/, plugins/, include/)", "Airflow", "other libraries"):
        print(f"profile: top {PROFILE_TOP} cumulative in {name}:")
        for (path, line, func_name), (_cc, calls, own, cum, _callers) in groups.get(name, [])[:PROFILE_TOP]:
            where = os.path.relpath(path, ROOT) if path.startswith(str(ROOT)) else path
            where = where.replace(f".venv{os.sep}lib{os.sep}", "").split(f"site-packages{os.sep}")[-1]
            print(
                f"  {cum:6.3f}s cum ({cum / total:4.0%}) {own:6.3f}s own {calls:6d} calls  "
                f"{func_name}  {where}:{line}"
            )


def main() -> None:
    """Time the children in a throw-away Airflow home and print the report (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5 (under a minute)")
    parser.add_argument("--profile", action="store_true", help="also profile one parse with cProfile")
    options = parser.parse_args()
    repeats = 2 if options.quick else 5
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        workdir = Path(tmp)
        specs = workdir / "pipelines"
        specs.mkdir()
        write_specs(specs, SPECS)
        env = child_env(workdir / "airflow-home", specs)
        print(
            f"parse bench: {SPECS} specs -> {EXPECTED_DAGS} DAGs, Airflow {version('apache-airflow')}, "
            f"Python {sys.version.split()[0]}, {repeats} runs of each child (+1 warm-up), "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        run_child("parse", env, workdir)  # warm-up: disk cache, logs folder; also checks the setup
        imports: list[float] = []
        parses: list[dict[str, Any]] = []
        for _ in range(repeats):
            imports.append(run_child("import", env, workdir)["t_import"])
            parses.append(run_child("parse", env, workdir))
        if options.profile:
            run_child("profile", env, workdir)
            print_profile(workdir / "result-profile.json.prof")

    baseline = statistics.median(imports)
    folder = statistics.median(p["t_parse"] for p in parses)
    dags = parses[0]["dags"]
    per_dag_ms = folder / dags * 1000
    heavy = sorted({m for p in parses for m in p["heavy_modules"]})
    heavy_at_import = sorted({m for p in parses for m in p["heavy_at_import"]})
    meets = per_dag_ms < TARGETS["ms_per_dag"] and folder < TARGETS["folder_s"]

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    print(f"bare `import airflow.sdk` (child A):      median {baseline:.3f} s  [{runs(imports)}]")
    print(
        f"`import airflow.sdk` in child B:          median "
        f"{statistics.median(p['t_import'] for p in parses):.3f} s  [{runs([p['t_import'] for p in parses])}]"
    )
    print(
        f"import of DagBag's module (not counted):  median "
        f"{statistics.median(p['t_dagbag_module'] for p in parses):.3f} s"
    )
    print(
        f"DagBag fill of dags/ (child B):           median {folder:.3f} s  [{runs([p['t_parse'] for p in parses])}]"
    )
    print(
        f"  of which garbage collection:            median {statistics.median(p['t_gc'] for p in parses):.3f} s"
        f"  [full: {runs([p['t_gc_full'] for p in parses])}]"
    )
    print("  (Airflow's heap is gc.freeze()d before the parse, as the real DAG processor does)")
    print(
        f"per DAG: {per_dag_ms:.2f} ms (target < {TARGETS['ms_per_dag']}), "
        f"folder: {folder:.3f} s (target < {TARGETS['folder_s']}), parse/import ratio {folder / baseline:.3f}"
        f" -> {'meets' if meets else 'MISSES'} targets"
    )
    print(f"heavy modules imported while parsing: {', '.join(heavy) or 'none'}")
    if heavy_at_import:
        print(f"heavy modules already imported by `import airflow.sdk`: {', '.join(heavy_at_import)}")
    print(f"bench wall time: {time.perf_counter() - started:.1f} s")
    print(
        json.dumps(
            {
                "bench": "parse",
                "value": round(per_dag_ms, 3),
                "baseline": round(baseline, 4),
                "ratio": round(folder / baseline, 4),
                "unit": "ms/dag",
                "dags": dags,
                "folder_parse_s": round(folder, 4),
                "targets": TARGETS,
                "meets_targets": meets,
                "heavy_modules": heavy,
            }
        )
    )


if __name__ == "__main__":
    main()
