"""``python -m include.mlops <command>``: the core's entry point, for containers and for people.

Each stage is a command, so a Kubernetes pod or a SageMaker / Vertex job runs exactly the code the
Airflow worker runs. Errors print one readable line and exit 2 (deterministic) or 75 (retryable).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from include.mlops.errors import MlopsError, NothingToDo
from include.mlops.spec import PipelineSpec, find_spec, load_specs


def _generate(args: argparse.Namespace) -> Any:
    from include.mlops.datagen import write_batch, write_labels

    spec = find_spec(args.pipeline)
    common = {
        "rows": args.rows,
        "seed": args.seed,
        "drift": args.drift,
        "id_offset": args.id_offset,
        "dataset": args.dataset,
    }
    if args.labels is not None:
        return {"written": write_labels(spec, args.name, flip=args.labels, **common)}
    return {
        "written": write_batch(
            spec, args.name, scoring=args.scoring, malformed_batch=args.malformed, **common
        )
    }


def _ingest(spec: PipelineSpec, _: argparse.Namespace) -> Any:
    from include.mlops.data import ingest

    results, failures = [], []
    for uri in ingest.discover(spec):
        try:
            results.append(ingest.ingest_file(spec, uri).to_dict())
        except MlopsError as exc:
            failures.append(str(exc))
    if failures:
        raise MlopsError("\n".join(failures))
    return results


def _train(spec: PipelineSpec, _: argparse.Namespace) -> Any:
    from include.mlops.model import training

    return training.train(spec).to_dict()


def _evaluate(spec: PipelineSpec, args: argparse.Namespace) -> Any:
    from include.mlops.gate import evaluation

    return evaluation.evaluate(spec, version=args.version)


def _promote(spec: PipelineSpec, args: argparse.Namespace) -> Any:
    from include.mlops.model import registry

    if not args.version:
        raise MlopsError("promote needs --version (and --expected-champion when there is a champion)")
    return registry.promote(spec, version=args.version, expected_champion=args.expected_champion)


def _rollback(spec: PipelineSpec, args: argparse.Namespace) -> Any:
    from include.mlops.model import registry

    return registry.rollback(spec, to_version=args.version)


def _score(spec: PipelineSpec, args: argparse.Namespace) -> Any:
    from include.mlops.scoring import inference

    return inference.score(spec, run_id=args.run_id, rescore=args.rescore)


def _drift(spec: PipelineSpec, args: argparse.Namespace) -> Any:
    from include.mlops.monitoring import drift

    return drift.check(spec, run_key=args.run_id)


def _aliases(spec: PipelineSpec, _: argparse.Namespace) -> Any:
    from include.mlops.model import registry

    return registry.aliases(spec)


def _ping(spec: PipelineSpec, _: argparse.Namespace) -> Any:
    from include.mlops.ping import ping

    return ping(spec.name)


# The pipeline stages, in the order ``--help`` lists them: name -> (help, handler). They share one
# set of options (``_run`` below); each handler imports only the heavy modules its stage needs.
_STAGES: dict[str, tuple[str, Callable[[PipelineSpec, argparse.Namespace], Any]]] = {
    "ingest": ("validate and publish landed files", _ingest),
    "train": ("train and register", _train),
    "evaluate": ("run the gate", _evaluate),
    "promote": ("move the champion alias", _promote),
    "rollback": ("restore the previous champion", _rollback),
    "score": ("batch inference", _score),
    "drift": ("drift check", _drift),
    "aliases": ("show the model's aliases", _aliases),
    "ping": ("load the spec and return (a task with no work, to time the machinery)", _ping),
}


def _run(args: argparse.Namespace) -> Any:
    spec = find_spec(args.pipeline)
    if args.command not in _STAGES:
        raise AssertionError(args.command)
    _, handler = _STAGES[args.command]
    return handler(spec, args)


def _history(args: argparse.Namespace) -> Any:
    from include.mlops.model.history import format_table, show

    records = show(find_spec(args.pipeline).model_name)
    if args.json:
        return records
    print(format_table(records))
    return None


def _drift_history(args: argparse.Namespace) -> Any:
    from include.mlops.monitoring.retraining import drift_history, format_drift_history

    entries = drift_history(find_spec(args.pipeline))
    if args.version:
        entries = [e for e in entries if str(e.get("model_version")) == args.version]
    if args.json:
        return entries
    print(format_drift_history(entries))
    return None


def _suggest_suite(args: argparse.Namespace) -> Any:
    from include.mlops.data.suggest_suite import suggest_file

    return suggest_file(
        args.data, args.out, name=args.name, id_column=args.id_column, force=args.force, fmt=args.format
    )


def _quarantine(args: argparse.Namespace) -> Any:
    from include.mlops.data.quarantine import format_table, list_quarantine

    entries = list_quarantine(find_spec(args.pipeline))
    if args.json:
        return entries
    print(format_table(entries))
    return None


def _release(args: argparse.Namespace) -> Any:
    from include.mlops.data.quarantine import release

    return release(find_spec(args.pipeline), args.target, force=args.force)


def _check_data(args: argparse.Namespace) -> Any:
    from include.mlops.data.check_data import check_data, format_report
    from include.mlops.errors import DataError

    result = check_data(find_spec(args.pipeline), args.data, rows=args.rows)
    print(json.dumps(result, indent=2, default=str) if args.json else format_report(result))
    if result["errors"]:
        raise DataError(f"{result['file']}: {result['errors']} error(s) for pipeline {args.pipeline}")
    return None


def _check_specs(_: argparse.Namespace) -> Any:
    specs, errors = load_specs()
    if errors:
        raise MlopsError("\n".join(errors.values()))
    return {"valid": [s.name for s in specs]}


def _add_check_data(sub: Any) -> None:
    check = sub.add_parser("check-data", help="check a data file against a pipeline's spec before training")
    check.add_argument("pipeline")
    check.add_argument("data", help="a CSV or Parquet file (path or URI); a sample of it is read")
    check.add_argument("--rows", type=int, default=20_000, help="rows to sample (default 20,000)")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.set_defaults(func=_check_data)


def parser() -> argparse.ArgumentParser:
    """The command line of training containers and operators; one sub-command per stage."""
    root = argparse.ArgumentParser(prog="python -m include.mlops", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("check-specs", help="validate every pipeline spec").set_defaults(func=_check_specs)
    _add_check_data(sub)
    hist = sub.add_parser("history", help="show a pipeline's promotion history (append-only audit)")
    hist.add_argument("pipeline")
    hist.add_argument("--json", action="store_true", help="print the records as JSON")
    hist.set_defaults(func=_history)
    drift_hist = sub.add_parser(
        "drift-history", help="show a pipeline's drift checks: share over time, drifted columns, retrains"
    )
    drift_hist.add_argument("pipeline")
    drift_hist.add_argument("--version", help="only checks against this champion version")
    drift_hist.add_argument("--json", action="store_true", help="print the records as JSON")
    drift_hist.set_defaults(func=_drift_history)
    suggest = sub.add_parser(
        "suggest-suite", help="write an editable Great Expectations suite derived from a reference file"
    )
    suggest.add_argument("data", help="reference dataset: a CSV or Parquet file (path or URI)")
    suggest.add_argument("--out", required=True, help="e.g. include/expectations/<name>.json")
    suggest.add_argument("--name", help="suite name (default: the output file's name)")
    suggest.add_argument("--id-column", help="the column whose values must be unique (default: guessed)")
    suggest.add_argument("--format", choices=["csv", "parquet"], help="when the extension does not say")
    suggest.add_argument("--force", action="store_true", help="overwrite an existing output file")
    suggest.set_defaults(func=_suggest_suite)
    quarantined = sub.add_parser("quarantine", help="list a pipeline's quarantined batches and why")
    quarantined.add_argument("pipeline")
    quarantined.add_argument("--json", action="store_true", help="print the records as JSON")
    quarantined.set_defaults(func=_quarantine)
    release = sub.add_parser(
        "release", help="move a fixed file from quarantine back into the pipeline's landing zone"
    )
    release.add_argument("pipeline")
    release.add_argument("target", help="quarantine folder (name, path or URI) or the file in it")
    release.add_argument(
        "--force", action="store_true", help="release even if the file is unchanged since quarantine"
    )
    release.set_defaults(func=_release)
    gen = sub.add_parser("generate", help="write a synthetic batch into a pipeline's landing or scoring zone")
    gen.add_argument("pipeline")
    gen.add_argument("--name", required=True, help="file name without extension")
    gen.add_argument("--dataset", help="generator to use (default: the pipeline's name)")
    gen.add_argument("--rows", type=int, default=5000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--drift", type=float, default=0.0)
    gen.add_argument("--id-offset", type=int, default=0)
    gen.add_argument("--scoring", action="store_true", help="write unlabelled input for batch inference")
    gen.add_argument("--malformed", action="store_true", help="break the data contract on purpose")
    gen.add_argument(
        "--labels",
        type=float,
        metavar="FLIP",
        help="write the late labels (id + target) of the --scoring batch with the same arguments into "
        "monitoring.labels.uri, a FLIP fraction of them inverted (0: the true labels)",
    )
    gen.set_defaults(func=_generate)
    for name, (help_text, _) in _STAGES.items():
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("pipeline")
        cmd.add_argument("--version")
        cmd.add_argument("--expected-champion")
        cmd.add_argument("--run-id", default="manual")
        cmd.add_argument("--rescore", action="store_true")
        cmd.set_defaults(func=_run)
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one command; a core error exits with its message and a status that tells a retry apart."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        result = args.func(args)
    except NothingToDo as exc:
        print(f"nothing to do: {exc}", file=sys.stderr)
        return 0
    except MlopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.deterministic else 75
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0
