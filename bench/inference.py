"""Batch inference throughput and memory: ``inference.score_partition`` against a hand-written loop.

Why: batch inference should run at the speed of the model. Everything the pipeline adds around
``predict`` (the signature check, one ``predict_proba`` pass giving both the label and the
probability, the id, model version and run id columns, progress logs, the atomic commit and its
manifest) must cost little next to a bare loop, and memory must not grow with the input. Targets:
throughput ours / baseline >= 0.85 for both models, and peak RSS at 10M rows <= 1.25 x the peak at
1M rows.

How: data and models are made once and cached under ``<tmp>/mlops-bench-inference/`` (untimed;
``--fresh`` remakes them).

* data (seeded): Parquet files of 10,000,000 and 1,000,000 rows (``--quick``: 200,000 and 50,000)
  x 20 float64 features and an int64 ``row_id``, written by pyarrow in 1,048,576-row row groups
  (its default);
* models: the project's training pipeline (``estimators.build_model``: impute + scale + estimator)
  around a ``HistGradientBoostingClassifier`` (100 iterations) and a ``LogisticRegression``,
  fitted on 50,000 rows (``--quick``: 10,000), logged to an embedded MLflow store with a signature
  the way ``training.train`` logs models, registered and aliased ``champion``. Each is then pinned by
  ``inference.resolve_champion`` (as the DAG's ``resolve`` task does) and loaded back with
  ``inference.load_model``; that loaded estimator is pickled for the measurements, so both sides
  score with the very same object and no measurement pays for MLflow's import;
* ours: ``inference.score_partition`` on the file as a partition, with the spec's default
  ``inference.chunk_rows`` (100,000; ``--quick``: 25,000, so that both sizes span several chunks):
  output ``row_id``, ``prediction``, ``probability``, ``model_version``, ``run_id``, committed by
  rename, ``_SUCCESS`` manifest;
* baseline: the loop one would write by hand, with the same chunk size: ``ParquetFile.iter_batches``
  -> ``to_pandas`` -> ``model.predict`` on the raw estimator -> ``ParquetWriter.write_table`` of
  ``row_id`` and ``prediction``.

Every measurement runs in its own fresh subprocess, so peak RSS (``ru_maxrss`` of that child, from
``os.wait4``; this parent stays small because a child's ``ru_maxrss`` counts the image it was forked
from) is not shared; each child also reports its own ``VmHWM``. A child times its work alone:
imports and the model load are reported apart. Per model and size, baseline and ours run as a pair,
``--repeats`` times (default 3; 1 with ``--quick``), the order swapping from one pair to the next.
``ratio`` is the median over pairs of ours rows/s / baseline rows/s at the large size (a pair runs
back to back, so a change of machine load between pairs does not skew it), the worse of the two
models; ``ratio_of_medians`` is reported too. ``rss_growth`` is ours peak RSS at the large size / at
the small size (the highest peak of each), the worse of the two models. The two outputs' ``prediction`` columns are compared row by
row. The share of the machine's CPU used by other processes while measuring is reported: the
machine may be shared, and libgomp's barriers in HistGradientBoosting stall when it is.

Human-readable lines come first; the last line of output is one JSON object. The exit status is
non-zero only if the measurement itself failed, not on a missed target.
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
from pathlib import Path
from typing import Any

from bench._harness import OtherLoad, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
BASE_SPEC = ROOT / "include" / "pipelines" / "churn.yaml"
CACHE = Path(tempfile.gettempdir()) / "mlops-bench-inference"
CACHE_VERSION = "v1"
TARGET_RATIO = 0.85
TARGET_RSS_GROWTH = 1.25
FEATURES = 20
ROW_GROUP = 1 << 20  # pyarrow's default row-group size, written explicitly
SEED = 2026
MODELS = {
    "hgb": ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 100}),
    "lr": ("sklearn.linear_model.LogisticRegression", {"max_iter": 500}),
}
SIZES = {
    "full": {"large": 10_000_000, "small": 1_000_000, "train": 50_000},
    # Quick: small chunks, so that both sizes span several chunks as the full sizes do.
    "quick": {"large": 200_000, "small": 50_000, "train": 10_000, "chunk_rows": 25_000},
}


# ---------------------------------------------------------------------------------------------
# Children (heavy imports live here only)
# ---------------------------------------------------------------------------------------------


def feature_names() -> list[str]:
    """The generated feature columns, in the order both sides read them."""
    return [f"f{i:02d}" for i in range(FEATURES)]


def make_spec(model: str, data_dir: Path, out_dir: Path, chunk_rows: int | None = None) -> Any:
    """A pipeline spec pointing at this bench's folders, so ``score_partition`` runs unchanged."""
    import yaml

    from include.mlops.spec import parse_spec

    raw = yaml.safe_load(BASE_SPEC.read_text())
    estimator, params = MODELS[model]
    raw["name"] = f"bench_{model}"
    raw["data"].update({"id_column": "row_id", "timestamp_column": None, "features": feature_names()})
    raw["training"].update({"estimator": estimator, "params": params})
    raw["registry"] = {"model_name": f"bench_{model}", "approval": "auto"}
    raw["inference"] = {"input": str(data_dir), "output": str(out_dir), "format": "parquet"}
    if chunk_rows:
        raw["inference"]["chunk_rows"] = chunk_rows
    raw["evaluation"].pop("slices", None)
    return parse_spec(raw, f"bench/{model}.yaml")


def write_data(path: Path, rows: int, seed: int) -> None:
    """Seeded features, written in 1M-row batches so generating 10M rows stays small in memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = feature_names()
    schema = pa.schema([("row_id", pa.int64())] + [(n, pa.float64()) for n in names])
    tmp = path.with_name(f".tmp-{path.name}")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            block = rng.standard_normal((n, FEATURES))
            arrays = [pa.array(np.arange(start, start + n))] + [
                pa.array(block[:, i]) for i in range(FEATURES)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=ROW_GROUP)
    tmp.rename(path)


def training_frame(rows: int) -> tuple[Any, Any]:
    """Generated rows to fit the benchmarked models on (features, target)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED + 1)
    x = pd.DataFrame(rng.standard_normal((rows, FEATURES)), columns=feature_names())
    signal = x["f00"] + 0.5 * x["f01"] - x["f02"] * x["f03"] + 0.3 * np.sin(3 * x["f04"])
    y = (signal + rng.standard_normal(rows) > 0).astype(int)
    return x, y


def register(model: str, models_dir: Path, train_rows: int) -> None:
    """Fit, log and register one model as ``training.train`` does; pin and load it as inference does."""
    import pickle

    import mlflow
    from mlflow.models import infer_signature

    from include.mlops import tracking
    from include.mlops.model import estimators, training
    from include.mlops.scoring import inference

    spec = make_spec(model, models_dir, models_dir)
    x, y = training_frame(train_rows)
    estimator = estimators.build_model(spec, x).fit(x, y)
    client = tracking.client()
    experiment_id = tracking.ensure_experiment("bench/inference")
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(x.head(100), estimator.predict(x.head(100))),
            skops_trusted_types=training.own_types(estimator),
            pip_requirements=["scikit-learn"],  # skips MLflow's requirement inference (a subprocess)
        )
    version = mlflow.register_model(info.model_uri, spec.model_name)
    client.set_registered_model_alias(spec.model_name, "champion", version.version)
    champion = inference.resolve_champion(spec)
    loaded = inference.load_model(champion)
    if not (loaded.predict(x.head(1000)) == estimator.predict(x.head(1000))).all():
        raise SystemExit(f"{model}: the model loaded from MLflow predicts differently")
    (models_dir / f"{model}.champion.json").write_text(json.dumps(champion))
    with open(models_dir / f"{model}.pkl", "wb") as handle:
        pickle.dump(loaded, handle)


def child_prepare(cache: Path, mode: str) -> dict[str, Any]:
    """Data files and registered models, made once per cache folder."""
    from include.mlops.spec import InferenceSpec

    sizes, made = SIZES[mode], {}
    started = time.perf_counter()
    for size in ("small", "large"):
        path = cache / f"data-{sizes[size]}" / "input" / "scores.parquet"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_data(path, sizes[size], SEED + sizes[size])
        made[size] = str(path)
    generate_s = time.perf_counter() - started

    started = time.perf_counter()
    models_dir = cache / f"models-{mode}"
    os.environ["MLOPS_STATE_DIR"] = str(models_dir / "state")
    for model in MODELS:
        if not (models_dir / f"{model}.pkl").exists():
            register(model, models_dir, sizes["train"])
    return {
        "data": made,
        "models": str(models_dir),
        "generate_s": generate_s,
        "models_s": time.perf_counter() - started,
        "chunk_rows": sizes.get("chunk_rows") or InferenceSpec.model_fields["chunk_rows"].default,
    }


def child_score(
    kind: str, model: str, data: Path, models_dir: Path, out_dir: Path, chunk_rows: int
) -> dict[str, Any]:
    """One measurement: imports, model load and work timed apart."""
    import logging

    started = time.perf_counter()
    import pickle

    import numpy as np  # noqa: F401
    import pandas as pd  # noqa: F401
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn  # noqa: F401

    from include.mlops.scoring import inference

    import_s = time.perf_counter() - started
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    with open(models_dir / f"{model}.pkl", "rb") as handle:
        estimator = pickle.load(handle)
    champion = json.loads((models_dir / f"{model}.champion.json").read_text())
    load_s = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    if kind == "ours":
        spec = make_spec(model, data.parent, out_dir, chunk_rows)
        manifest = inference.score_partition(
            spec, data.resolve().as_uri(), champion=champion, run_id="bench__run", model=estimator
        )
        output, rows = manifest["output"].removeprefix("file://"), manifest["rows"]
    else:
        output, rows, writer = str(out_dir / "predictions.parquet"), 0, None
        features = feature_names()
        for batch in pq.ParquetFile(data).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            predicted = estimator.predict(frame[features])
            table = pa.table({"row_id": batch.column("row_id"), "prediction": predicted})
            writer = writer or pq.ParquetWriter(output, table.schema)
            writer.write_table(table)
            rows += batch.num_rows
        writer.close()
    work_s = time.perf_counter() - started
    return {"import_s": import_s, "load_s": load_s, "work_s": work_s, "rows": rows, "output": output}


def child_verify(ours: str, baseline: str) -> dict[str, Any]:
    """Do both outputs hold the same rows and predictions? (streamed, row group by row group)"""
    import numpy as np
    import pyarrow.parquet as pq

    a, b = pq.ParquetFile(ours), pq.ParquetFile(baseline)
    columns = ["row_id", "prediction"]
    same, rows = True, 0
    for x, y in zip(
        a.iter_batches(batch_size=ROW_GROUP, columns=columns),
        b.iter_batches(batch_size=ROW_GROUP, columns=columns),
        strict=True,
    ):
        for column in columns:
            same &= bool(np.array_equal(x.column(column).to_numpy(), y.column(column).to_numpy()))
        rows += x.num_rows
    return {"identical": same, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Parent (stays small: no heavy imports)
# ---------------------------------------------------------------------------------------------


def run_child(workdir: Path, tag: str, *args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; add its peak RSS (``ru_maxrss`` from wait4)."""
    result_path, log_path = workdir / f"{tag}.json", workdir / f"{tag}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args, "--result", str(result_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{tag} failed with exit status {process.returncode}:\n{tail}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["process_s"] = time.perf_counter() - started
    return result


def child_main(options: argparse.Namespace) -> None:
    """One step (prepare, verify or a measurement) in this fresh process: its imports and peak memory are its own."""
    args = options.child
    if args[0] == "prepare":
        result = child_prepare(Path(args[1]), args[2])
    elif args[0] == "verify":
        result = child_verify(args[1], args[2])
    else:
        kind, model, data, models_dir, out_dir, chunk_rows = args
        result = child_score(kind, model, Path(data), Path(models_dir), Path(out_dir), int(chunk_rows))
    result["vm_hwm_mb"] = peak_rss_mb()
    options.result.write_text(json.dumps(result), encoding="utf-8")


Runs = dict[tuple[str, str, str], list[dict[str, Any]]]  # (model, size, kind) -> one result per repeat


def measure(
    workdir: Path, prepared: dict[str, Any], repeats: int, chunk_rows: int
) -> tuple[Runs, dict[str, dict[str, Any]]]:
    """Baseline and ours for each model and size, ``repeats`` pairs; then compare the large outputs."""
    runs: Runs = {}
    verified: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        for size in ("small", "large"):
            data = prepared["data"][size]
            for repeat in range(repeats):
                order = ("baseline", "ours") if repeat % 2 == 0 else ("ours", "baseline")
                for kind in order:
                    tag = f"{model}-{size}-{kind}-{repeat}"
                    out = workdir / "out" / tag
                    run = run_child(
                        workdir, tag, kind, model, data, prepared["models"], str(out), str(chunk_rows)
                    )
                    runs.setdefault((model, size, kind), []).append(run)
                    print(
                        f"{model:4s} {size:5s} {kind:8s}: {run['rows'] / run['work_s']:>10,.0f} rows/s "
                        f"(work {run['work_s']:.2f} s, imports {run['import_s']:.2f} s, model load "
                        f"{run['load_s']:.2f} s), peak RSS {run['peak_rss_mb']:.0f} MB "
                        f"(VmHWM {run['vm_hwm_mb']:.0f} MB)",
                        flush=True,
                    )
            if size == "large":
                check = run_child(
                    workdir,
                    f"{model}-verify",
                    "verify",
                    runs[(model, size, "ours")][-1]["output"],
                    runs[(model, size, "baseline")][-1]["output"],
                )
                verified[model] = check
            shutil.rmtree(workdir / "out", ignore_errors=True)  # the outputs are not needed any more
    return runs, verified


def summarise(runs: Runs, verified: dict[str, dict[str, Any]], large_rows: int) -> dict[str, dict[str, Any]]:
    """Per model: throughputs, ratios and peak RSS at both sizes, and whether the predictions matched."""

    def rate(model: str, size: str, kind: str) -> float:
        return statistics.median(r["rows"] / r["work_s"] for r in runs[(model, size, kind)])

    def paired(model: str, size: str) -> float:
        pairs = zip(runs[(model, size, "ours")], runs[(model, size, "baseline")], strict=True)
        return statistics.median((o["rows"] / o["work_s"]) / (b["rows"] / b["work_s"]) for o, b in pairs)

    def peak(model: str, size: str, kind: str) -> float:
        return max(r["peak_rss_mb"] for r in runs[(model, size, kind)])

    per_model = {}
    for model in MODELS:
        per_model[model] = {
            "ours_rows_per_s": round(rate(model, "large", "ours")),
            "baseline_rows_per_s": round(rate(model, "large", "baseline")),
            "ratio": round(paired(model, "large"), 3),
            "ratio_of_medians": round(rate(model, "large", "ours") / rate(model, "large", "baseline"), 3),
            "ratio_small": round(paired(model, "small"), 3),
            "ours_peak_rss_mb": {s: round(peak(model, s, "ours"), 1) for s in ("small", "large")},
            "baseline_peak_rss_mb": {s: round(peak(model, s, "baseline"), 1) for s in ("small", "large")},
            "rss_growth": round(peak(model, "large", "ours") / peak(model, "small", "ours"), 3),
            "baseline_rss_growth": round(
                peak(model, "large", "baseline") / peak(model, "small", "baseline"), 3
            ),
            "predictions_identical": verified[model]["identical"] and verified[model]["rows"] == large_rows,
        }
    return per_model


def main() -> None:
    """Run every measurement in child processes and print the summary, JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k and 50k rows in 25k-row chunks")
    parser.add_argument("--repeats", type=int, default=None, help="baseline/ours pairs per size (default 3)")
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default: the spec's)")
    parser.add_argument("--fresh", action="store_true", help="remake the cached data and models")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child_main(options)
        return

    mode = "quick" if options.quick else "full"
    sizes = SIZES[mode]
    repeats = options.repeats or (1 if options.quick else 3)
    started = time.perf_counter()
    cache = CACHE / CACHE_VERSION
    if options.fresh and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        workdir = Path(tmp)
        prepared = run_child(workdir, "prepare", "prepare", str(cache), mode)
        chunk_rows = options.chunk_rows or prepared["chunk_rows"]
        print(
            f"inference bench: {sizes['large']:,} and {sizes['small']:,} rows x {FEATURES} features (Parquet), "
            f"chunks of {chunk_rows:,} rows, models {', '.join(MODELS)}, baseline and ours x{repeats} "
            f"each in a fresh process; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        print(
            f"setup (cached in {cache}): data {prepared['generate_s']:.1f} s, models fitted, logged, "
            f"registered and loaded back {prepared['models_s']:.1f} s",
            flush=True,
        )
        load = OtherLoad()
        runs, verified = measure(workdir, prepared, repeats, chunk_rows)
        others = load.share()

    per_model = summarise(runs, verified, sizes["large"])
    ratio = min(m["ratio"] for m in per_model.values())
    rss_growth = max(m["rss_growth"] for m in per_model.values())
    identical = all(m["predictions_identical"] for m in per_model.values())
    for model, m in per_model.items():
        print(
            f"{model}: ours / baseline throughput {m['ratio']:.3f} at {sizes['large']:,} rows "
            f"({m['ratio_small']:.3f} at {sizes['small']:,}); ours peak RSS {m['ours_peak_rss_mb']['large']:.0f} MB "
            f"vs {m['ours_peak_rss_mb']['small']:.0f} MB (x{m['rss_growth']:.3f}; baseline "
            f"x{m['baseline_rss_growth']:.3f}); predictions identical to the baseline's: {m['predictions_identical']}"
        )
    if others is not None:
        print(f"other processes used {others:.0%} of the machine's CPU while measuring")
    meets = ratio >= TARGET_RATIO and rss_growth <= TARGET_RSS_GROWTH and identical
    print(
        f"ratio (ours / baseline rows/s, worse model): {ratio:.3f} (target >= {TARGET_RATIO}); rss_growth "
        f"(peak RSS at {sizes['large']:,} / at {sizes['small']:,} rows, worse model): {rss_growth:.3f} "
        f"(target <= {TARGET_RSS_GROWTH}) -> {'meets' if meets else 'MISSES'} targets"
    )
    print(f"bench wall time: {time.perf_counter() - started:.1f} s")
    print(
        json.dumps(
            {
                "bench": "inference",
                "mode": mode,
                "rows": sizes["large"],
                "rows_small": sizes["small"],
                "features": FEATURES,
                "chunk_rows": chunk_rows,
                "repeats": repeats,
                "ratio": ratio,
                "rss_growth": rss_growth,
                "target": {"ratio": TARGET_RATIO, "rss_growth": TARGET_RSS_GROWTH},
                "meets_target": meets,
                "predictions_identical": identical,
                "models": per_model,
                "other_cpu_share": None if others is None else round(others, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
