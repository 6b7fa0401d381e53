"""Evaluation gate cost: ``evaluate()`` on a 200k-row holdout with 1,000 paired bootstrap resamples.

Why: the gate runs after every training; it re-scores the champion, bootstraps the improvement,
checks slices, latency, size and the scoring schema, renders a report and logs it all to MLflow.
Scoring the holdout is the part that cannot be avoided, so the gate should cost a small multiple of
one scoring pass: the target is gate wall time < 3 x one ``metrics.score`` of the candidate.

How: everything runs in this process, in a throw-away ``MLOPS_STATE_DIR`` (embedded SQLite MLflow
store and data root) with a copy of ``include/pipelines/churn.yaml`` in a throw-away
``MLOPS_PIPELINES_DIR``.

* spec: churn.yaml as shipped, with 1,000 resamples. It sets no latency budget (a p95 in ms only
  means something on the deployment's hardware), so the gate runs no latency check; the breakdown
  still times that check with the budget ``LATENCY`` and reports ``ratio_with_latency_check``, the
  ratio a deployment that sets one would see (gate + latency check) / floor;
* setup (untimed): ``training.train`` runs twice, unchanged except for its data source: the
  published datasets are replaced by generated churn rows (``datagen.churn``) and the id-hash split
  by "the last ``holdout_rows`` rows", so the 200k-row holdout does not need a 1M-row fit (and
  MLflow's pip-requirement inference is skipped). Both versions are logged and registered by the
  production code path; v1 is promoted to champion (``registry.promote``, no gate needed) and v2 is
  the candidate. A small scoring batch is landed so the schema check reads a real file.
* floor: ``metrics.score`` of the candidate on the holdout's features (model loaded beforehand):
  the one scoring pass the gate makes per model (``predict_proba`` once, labels by argmax, checked
  against ``predict`` on the first rows);
* gate: ``evaluation.evaluate(spec, version=<v2>)``, whole: MLflow look-ups, downloads, both scoring
  passes, every check, plots, report, decision and tags logged. A GateFailed is still a measurement;
* breakdown: the gate's steps (``include.mlops.gate.steps``, the functions ``evaluate`` is made of)
  re-run one by one, each timed on its own (separately from the gate runs, so their sum only
  approximates the gate); the breakdown logs and tags a decision of its own, as a gate run does.

After one untimed warm-up of the floor and the gate, floor, gate and breakdown alternate N times
(3; 1 with ``--quick``, which also shrinks the holdout to 50k rows), with a last floor at the end;
medians are reported. The ratio is the median over gate runs of gate / mean of the two floor runs
around it, so a change of machine load between runs does not skew it (``ratio_of_medians`` too).

Other processes' CPU use during the measurement is reported: on a busy 2-core machine libgomp's
barriers stall (HistGradientBoosting runs one parallel region per tree), which hits the latency
check's many small batches far harder than the floor's one large batch. ``--threads N`` caps the
OpenMP/BLAS threads while measuring (default: the libraries' own, as in production).
``--profile`` also runs the gate once under cProfile and prints the top hotspots. Human-readable
lines come first; the last line of output is one JSON object. The exit status is non-zero only if
the measurement itself failed, not on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import pandas as pd
import yaml

if TYPE_CHECKING:
    from include.mlops.spec import PipelineSpec

from bench._harness import OtherLoad

ROOT = Path(__file__).resolve().parents[1]
BASE_SPEC = ROOT / "include" / "pipelines" / "churn.yaml"
TARGET_RATIO = 3
RESAMPLES = 1000
# churn.yaml leaves the latency budget to each deployment; the breakdown times the check with this one
# (generous, so it runs in full) for the ratio a deployment that sets one would see.
LATENCY = {"max_p95_ms": 500, "batch_rows": 1000}
SIZES = {  # holdout rows, training rows per model version, repetitions
    "full": {"holdout": 200_000, "train": 50_000, "repeats": 3},
    "quick": {"holdout": 50_000, "train": 20_000, "repeats": 1},
}
PROFILE_TOP = 15
OUR_CODE = str(ROOT / "include") + os.sep


class Stopwatch:
    """Named wall-clock timings; a name timed twice accumulates."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block under ``name`` (accumulating, so a step may be split)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def isolate(workdir: Path) -> None:
    """Point the MLOps core and MLflow at throw-away state (before anything reads the settings)."""
    for name in [k for k in os.environ if k.startswith("MLOPS_")] + ["MLFLOW_TRACKING_URI"]:
        os.environ.pop(name, None)
    os.environ.update(
        MLOPS_STATE_DIR=str(workdir / "state"),
        MLOPS_PIPELINES_DIR=str(workdir / "pipelines"),
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        GX_ANALYTICS_ENABLED="False",
    )


def write_spec(folder: Path) -> str:
    """churn.yaml with the settings this benchmark relies on made explicit; returns the spec name."""
    raw = yaml.safe_load(BASE_SPEC.read_text(encoding="utf-8"))
    evaluation = raw["evaluation"]
    if evaluation["primary_metric"] != "roc_auc" or raw["data"]["task"] != "classification":
        raise SystemExit(f"{BASE_SPEC}: expected a classification spec judged on roc_auc")
    missing = [key for key in ("slices", "max_model_mb") if not evaluation.get(key)]
    if missing:
        raise SystemExit(f"{BASE_SPEC}: the gate would skip work: no {', '.join(missing)}")
    evaluation["bootstrap"] = {**evaluation.get("bootstrap", {}), "resamples": RESAMPLES}
    raw["training"]["holdout_fraction"] = 0.2
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{raw['name']}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return str(raw["name"])


def with_latency(spec: PipelineSpec) -> PipelineSpec:
    """The spec with its own latency budget, or ``LATENCY`` when it sets none."""
    from include.mlops.spec import LatencyBudget

    if spec.evaluation.latency is not None:
        return spec
    evaluation = spec.evaluation.model_copy(update={"latency": LatencyBudget(**LATENCY)})
    return spec.model_copy(update={"evaluation": evaluation})


def register_version(spec: PipelineSpec, train_rows: int, holdout: pd.DataFrame, seed: int) -> str:
    """Run ``training.train`` on generated rows + the given holdout; return the registered version."""
    import mlflow.models
    from threadpoolctl import threadpool_limits

    from include.mlops import datagen
    from include.mlops.model import training

    frame = pd.concat([datagen.churn(train_rows, seed=seed), holdout], ignore_index=True)
    manifest = {"uri": f"bench://churn/seed-{seed}", "sha256": f"{seed:064d}"}

    def last_rows(data: pd.DataFrame, _spec: PipelineSpec) -> np.ndarray:
        return np.arange(len(data)) >= len(data) - len(holdout)

    def default_requirements(_model_uri: str, _flavor: str, fallback: Any = None, **_: Any) -> Any:
        return fallback

    # One thread: the fit is setup, and libgomp's spinning barriers stall badly on a shared 2-core box.
    # MLflow's pip-requirement inference (a subprocess that loads the model, ~5-10 s per version) is
    # skipped: the default sklearn requirements are logged instead, which the gate never reads.
    with (
        mock.patch.object(training, "load_training_frame", lambda _spec: (frame, [manifest])),
        mock.patch.object(training, "holdout_mask", last_rows),
        mock.patch.object(mlflow.models, "infer_pip_requirements", default_requirements),
        threadpool_limits(1),
    ):
        result = training.train(spec)
    if result.holdout_rows != len(holdout):
        raise SystemExit(f"training logged {result.holdout_rows} holdout rows, expected {len(holdout)}")
    return result.version


def setup(spec: PipelineSpec, sizes: dict[str, int]) -> tuple[str, str]:
    """Champion v1 and candidate v2, both fitted by ``training.train``; returns their versions."""
    from include.mlops import datagen
    from include.mlops.model import registry

    holdout = datagen.churn(sizes["holdout"], seed=2026, id_offset=10_000_000)
    champion = register_version(spec, sizes["train"], holdout, seed=1)
    registry.promote(spec, version=champion, expected_champion=None, require_gate=False, reason="bench setup")
    candidate = register_version(spec, sizes["train"], holdout, seed=2)
    datagen.write_batch(spec, "bench", rows=1000, seed=3, scoring=True)
    return champion, candidate


def run_gate(spec: PipelineSpec, version: str) -> tuple[float, str]:
    """Wall time of one whole gate and its outcome ("passed", or "failed: <reasons>")."""
    from include.mlops.errors import GateFailed
    from include.mlops.gate import evaluation

    started = time.perf_counter()
    try:
        evaluation.evaluate(spec, version=version)
        outcome = "passed"
    except GateFailed as exc:
        outcome = f"failed: {str(exc).split(' is untouched: ', 1)[-1]}"
    return time.perf_counter() - started, outcome


def breakdown(spec: PipelineSpec, version: str) -> dict[str, dict[str, float]]:
    """The gate's steps one by one: the very functions ``evaluate`` calls, in its order, each timed.

    Unlike the gate, the latency check always runs (with ``LATENCY`` when the spec sets no budget) so
    its cost is known; it joins the decision only when the spec sets a budget, as in the gate.
    """
    from include.mlops import tracking
    from include.mlops.gate import checks as gate_checks
    from include.mlops.gate import report as gate_report
    from include.mlops.gate import steps
    from include.mlops.gate.evaluation import decide

    io, compute = Stopwatch(), Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        with io.step("registry_lookups"):
            client = tracking.client()
            versions = steps.resolve_versions(client, spec, version)
        with io.step("holdout_download_read"):
            holdout = steps.load_holdout(spec, versions)
        with io.step("candidate_download_load"):
            candidate_model = steps.load_candidate(client, versions, f"{tmp}/c")
        with io.step("champion_download_load"):
            champion_model = steps.load_champion(client, versions, f"{tmp}/p")
        with compute.step("score_candidate"):
            candidate = steps.score(spec, candidate_model.model, holdout)
        with compute.step("score_champion"):
            champion = steps.score(spec, champion_model, holdout) if champion_model is not None else None
        with compute.step("metrics_both"):
            scores = steps.measure(spec, holdout, candidate, champion)
            checks = decide(spec, scores.candidate_metrics, scores.champion_metrics)
        with compute.step("bootstrap_paired"):
            boot = steps.paired_bootstrap(spec, holdout, scores)
            checks += [boot.check] if boot else []
        with compute.step("slices"):
            checks += gate_checks.slice_checks(spec, holdout.frame, candidate)
        with compute.step("latency"):  # not part of the gate unless the spec sets a budget
            latency = steps.latency(with_latency(spec), candidate_model, holdout)
            if spec.evaluation.latency is not None:
                checks += latency
        with compute.step("size_schema"):
            checks += steps.artifact_checks(spec, candidate_model, holdout)
        decision = steps.build_decision(spec, versions, holdout, scores, checks)
        with compute.step("plots"):
            images = steps.plots(spec, holdout, scores, boot)
        with compute.step("report_html"):
            report = gate_report.render(decision, images)
        with io.step("log_decision_report_tags"):  # a decision of its own, as a gate run would log
            steps.record_decision(client, decision, report)
        features = holdout.features
        diagnostics = Stopwatch()
        with diagnostics.step("candidate_predict_proba_only"):
            candidate_model.model.predict_proba(features)
        with diagnostics.step("candidate_predict_only"):
            candidate_model.model.predict(features)
        with diagnostics.step("candidate_preprocess_only"):
            candidate_model.model[:-1].transform(features)
    return {"io": io.seconds, "compute": compute.seconds, "diagnostics": diagnostics.seconds}


def profile_gate(spec: PipelineSpec, version: str, workdir: Path) -> None:
    """One gate under cProfile: top cumulative in include/, then top own time anywhere."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run_gate(spec, version)
    profiler.disable()
    stats = pstats.Stats(profiler)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = max(row[3] for row in table.values())

    def where(path: str, line: int) -> str:
        short = os.path.relpath(path, ROOT) if path.startswith(str(ROOT)) else path
        return f"{short.split(f'site-packages{os.sep}')[-1]}:{line}"

    def show(title: str, rows: list[tuple[tuple[str, int, str], tuple[Any, ...]]]) -> None:
        print(f"profile: {title}")
        for (path, line, name), (_cc, calls, own, cum, _callers) in rows[:PROFILE_TOP]:
            print(
                f"  {cum:7.3f}s cum ({cum / total:4.0%}) {own:7.3f}s own {calls:7d} calls  "
                f"{name}  {where(path, line)}"
            )

    print(f"profile: {total:.3f} s under cProfile")
    ours = [item for item in table.items() if item[0][0].startswith(OUR_CODE)]
    show("top cumulative in include/", sorted(ours, key=lambda item: item[1][3], reverse=True))
    show("top own time anywhere", sorted(table.items(), key=lambda item: item[1][2], reverse=True))
    stats.dump_stats(str(workdir / "gate.prof"))
    if os.environ.get("BENCH_KEEP_PROFILE"):
        stats.dump_stats(os.environ["BENCH_KEEP_PROFILE"])


def median_steps(runs: list[dict[str, dict[str, float]]], group: str) -> dict[str, float]:
    """Per-step medians over the repetitions, so one noisy run does not skew a step."""
    return {name: round(statistics.median(r[group][name] for r in runs), 4) for name in runs[0][group]}


def measure(spec: PipelineSpec, version: str, repeats: int) -> dict[str, Any]:
    """Warm-up, then floor, gate and breakdown alternating ``repeats`` times, then a last floor."""
    import mlflow

    from include.mlops import metrics, tracking
    from include.mlops.artifacts import HOLDOUT_ARTIFACT, download_run_frame
    from include.mlops.data.columns import feature_columns

    run_id = tracking.client().get_model_version(spec.model_name, version).run_id
    holdout = download_run_frame(run_id, HOLDOUT_ARTIFACT)
    features = holdout[feature_columns(holdout, spec)]
    model = mlflow.sklearn.load_model(f"models:/{spec.model_name}/{version}")

    def floor() -> float:
        started = time.perf_counter()
        metrics.score(spec.data.task, model, features)
        return time.perf_counter() - started

    floor(), run_gate(spec, version)  # warm-up: caches, lazy imports, the breakdown's functions too
    result: dict[str, Any] = {
        "holdout_rows": len(holdout),
        "floor": [],
        "gate": [],
        "outcome": [],
        "parts": [],
    }
    for _ in range(repeats):
        result["floor"].append(floor())
        seconds, outcome = run_gate(spec, version)
        result["gate"].append(seconds)
        result["outcome"].append(outcome)
        result["parts"].append(breakdown(spec, version))
    result["floor"].append(floor())  # every gate run is bracketed by two floor runs
    return result


def main() -> None:
    """Set up throw-away state, measure, print the human lines and the JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k-row holdout, 1 repetition (under a minute)")
    parser.add_argument("--profile", action="store_true", help="also profile one gate with cProfile")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap OpenMP/BLAS threads while measuring (default: the libraries' own, as in production)",
    )
    options = parser.parse_args()
    sizes = SIZES["quick" if options.quick else "full"]
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        workdir = Path(tmp)
        isolate(workdir)
        import logging

        import mlflow
        import sklearn
        from threadpoolctl import threadpool_limits

        from include.mlops.spec import find_spec

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        spec = find_spec(write_spec(workdir / "pipelines"))
        print(
            f"gate bench: {sizes['holdout']:,}-row holdout, {spec.evaluation.bootstrap.resamples} resamples, "
            f"{spec.training.estimator.rsplit('.', 1)[-1]} {spec.training.params}, "
            f"{sizes['repeats']} runs (+1 warm-up); Python {sys.version.split()[0]}, "
            f"MLflow {mlflow.__version__}, scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs, "
            f"threads {options.threads or 'default'}, load average {os.getloadavg()[0]:.2f}"
        )
        setup_started = time.perf_counter()
        champion_version, candidate_version = setup(spec, sizes)
        print(
            f"setup (untimed): champion v{champion_version}, candidate v{candidate_version}, "
            f"{sizes['train']:,} training rows each, {time.perf_counter() - setup_started:.1f} s"
        )
        load = OtherLoad()
        with threadpool_limits(options.threads):
            raw = measure(spec, candidate_version, sizes["repeats"])
            if options.profile:
                profile_gate(spec, candidate_version, workdir)
        others = load.share()
    if raw["holdout_rows"] != sizes["holdout"]:
        raise SystemExit(
            f"the candidate's holdout has {raw['holdout_rows']} rows, expected {sizes['holdout']}"
        )

    floors, gates, parts = raw["floor"], raw["gate"], raw["parts"]
    base, gate = statistics.median(floors), statistics.median(gates)
    # Each gate run against the mean of the floor runs just before and after it, so both sides of a
    # ratio share the machine's load at the time; the headline ratio is the median of these.
    per_run = [g / ((floors[i] + floors[i + 1]) / 2) for i, g in enumerate(gates)]
    ratio = statistics.median(per_run)
    io, compute = median_steps(parts, "io"), median_steps(parts, "compute")
    latency_in_gate = spec.evaluation.latency is not None
    latency_seconds = compute["latency"] if latency_in_gate else compute.pop("latency")
    diagnostics = median_steps(parts, "diagnostics")
    io_total, compute_total = sum(io.values()), sum(compute.values())
    meets = ratio < TARGET_RATIO
    statuses = {text.split(":")[0] for text in raw["outcome"]}
    outcome = statuses.pop() if len(statuses) == 1 else "mixed"

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    print(f"floor: metrics.score(candidate) on the holdout: median {base:.3f} s  [{runs(floors)}]")
    print(
        f"gate: evaluation.evaluate(v{candidate_version}):        median {gate:.3f} s  [{runs(gates)}] ({outcome})"
    )
    print(f"  last gate outcome: {raw['outcome'][-1][:400]}")
    print("breakdown (medians, measured step by step outside the gate runs):")
    for group, steps in (("io", io), ("compute", compute)):
        for name, seconds in sorted(steps.items(), key=lambda item: item[1], reverse=True):
            print(
                f"  {group:7s} {name:26s} {seconds:7.3f} s  {seconds / gate:4.0%} of the gate, "
                f"{seconds / base:5.2f} x floor"
            )
    print(
        f"  total: io {io_total:.3f} s + compute {compute_total:.3f} s = {io_total + compute_total:.3f} s "
        f"(gate - sum = {gate - io_total - compute_total:+.3f} s)"
    )
    print(
        "diagnostics: candidate predict_proba alone {candidate_predict_proba_only:.3f} s, predict alone "
        "{candidate_predict_only:.3f} s, preprocessing alone {candidate_preprocess_only:.3f} s "
        "(metrics.score runs predict_proba, plus predict on 2,000 rows)".format(**diagnostics)
    )
    if others is not None:
        print(f"other processes used {others:.0%} of the machine's CPU while measuring")
        if others > 0.1:
            print("WARNING: the machine was busy; OpenMP barriers stall under contention, numbers are noisy")
    rest = io_total + compute_total - (latency_seconds if latency_in_gate else 0.0)
    with_check = (gate if latency_in_gate else gate + latency_seconds) / base
    print(f"breakdown without the latency check: {rest:.3f} s = {rest / base:.2f} x floor")
    print(
        f"latency check ({'in the gate' if latency_in_gate else 'not in the spec; timed on its own'}): "
        f"{latency_seconds:.3f} s; with it the ratio would be {with_check:.2f}"
    )
    bare = diagnostics["candidate_predict_proba_only"]
    print(
        f"against one bare predict_proba pass ({bare:.3f} s) instead of metrics.score, "
        f"the ratio would be {gate / bare:.2f}"
    )
    print(f"ratio of the medians: {gate / base:.2f}")
    print(
        f"ratio gate/floor (median of each gate run / mean of the floors around it, "
        f"[{runs(per_run)}]): {ratio:.2f} (target < {TARGET_RATIO}) -> {'meets' if meets else 'MISSES'} target"
    )
    print(f"bench wall time: {time.perf_counter() - started:.1f} s")
    print(
        json.dumps(
            {
                "bench": "gate",
                "value": round(gate, 4),
                "baseline": round(base, 4),
                "ratio": round(ratio, 3),
                "unit": "s",
                "holdout_rows": sizes["holdout"],
                "resamples": RESAMPLES,
                "target": TARGET_RATIO,
                "meets_target": meets,
                "ratio_per_run": [round(r, 3) for r in per_run],
                "ratio_of_medians": round(gate / base, 3),
                "gate_outcome": outcome,
                "threads": options.threads,
                "other_cpu_share": None if others is None else round(others, 3),
                "breakdown": {
                    "io": io,
                    "compute": compute,
                    "io_total": round(io_total, 4),
                    "compute_total": round(compute_total, 4),
                    "gate_minus_sum": round(gate - io_total - compute_total, 4),
                    "ratio_without_latency_check": round(rest / base, 3),
                    "ratio_with_latency_check": round(with_check, 3),
                    "latency_check_in_gate": latency_in_gate,
                    "diagnostics": {**diagnostics, "ratio_vs_predict_proba_only": round(gate / bare, 3)},
                },
            }
        )
    )


if __name__ == "__main__":
    main()
