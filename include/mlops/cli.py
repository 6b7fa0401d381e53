"""``python -m include.mlops <command>``: the core's entry point, for containers and for people.

Each stage is a command, so a Kubernetes pod or a SageMaker / Vertex job runs exactly the code the
Airflow worker runs. Errors print one readable line and exit 2 (deterministic) or 75 (retryable).

The remote stages (``train`` and ``score-partition``) take ``--lineage`` (the Airflow task instance
the job works for) and ``--result-uri``: whatever happens, the job then writes one result record
there (``include.mlops.remote``), which the operator reads back when the job ends. What each
platform adds (SageMaker's ``hyperparameters.json`` and failure files, Vertex's ``AIP_MODEL_DIR``,
Kubernetes' termination message) is in ``include.mlops.platforms``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from include.mlops import platforms, remote
from include.mlops.errors import MlopsError, NothingToDo, one_line
from include.mlops.spec import PipelineSpec, find_spec, load_specs

log = logging.getLogger(__name__)

# The stages an operator runs as a remote job; they write a result record (see the module docstring).
REMOTE_STAGES = ("train", "score-partition")
RECORD_MESSAGE_CHARS = 1024  # a record's error: one line, as long as SageMaker's FailureReason


class UsageError(MlopsError):
    """The command line (or SageMaker's hyperparameters) is malformed; running again will not help."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised as ``UsageError`` so that they are reported like any other
    failure (result record, platform failure file) instead of exiting from inside the parser."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


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


def _lineage(args: argparse.Namespace) -> remote.Lineage | None:
    """``--lineage`` parsed; a malformed value is a usage error (the operator built it wrong)."""
    text = getattr(args, "lineage", None)
    if text is None:
        return None
    try:
        return remote.Lineage.from_json(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _train(spec: PipelineSpec, args: argparse.Namespace) -> Any:
    from include.mlops.model import training

    lineage = _lineage(args)
    return training.train(spec, lineage=lineage.tags() if lineage else None).to_dict()


def _champion(value: str) -> dict[str, Any]:
    """``--champion``: the pinned champion's JSON, or the URI of a file holding it (SageMaker limits a
    container argument to 256 characters, so its operator passes a long one by URI)."""
    from include.mlops import storage

    text = value.strip()
    try:
        champion = json.loads(text) if text.startswith("{") else storage.read_json(text)
    except ValueError as exc:
        raise UsageError(
            f"--champion must be the pinned champion's JSON (or its file's URI): {exc}"
        ) from None
    except FileNotFoundError:
        raise UsageError(
            f"--champion {text}: no such file; the operator writes it before the job starts"
        ) from None
    if not isinstance(champion, dict) or not {"model", "version", "model_uri"} <= champion.keys():
        raise UsageError(
            "--champion must be a JSON object with model, version and model_uri (what the resolve task returned)"
        )
    return champion


def _score_partition(args: argparse.Namespace) -> Any:
    from include.mlops.scoring import inference

    _lineage(args)  # a malformed lineage fails before any work, as in train
    champion = _champion(args.champion)
    return inference.score_partition(
        find_spec(args.pipeline), args.partition, champion=champion, run_id=args.run_id
    )


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
    if args.pipeline is None:
        raise UsageError(
            f"{args.command} needs a pipeline name (on SageMaker, the 'pipeline' hyperparameter)"
        )
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
    root = _Parser(prog="python -m include.mlops", description=__doc__)
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
        # SageMaker starts a training job as a bare `train`: the pipeline is in its hyperparameters.
        cmd.add_argument("pipeline", nargs="?" if name == "train" else None)
        cmd.add_argument("--version")
        cmd.add_argument("--expected-champion")
        cmd.add_argument("--run-id", default="manual")
        cmd.add_argument("--rescore", action="store_true")
        if name == "train":
            _add_remote_options(cmd)
        cmd.set_defaults(func=_run)
    _add_score_partition(sub)
    return root


def _add_remote_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--lineage", help="JSON naming the Airflow task instance (dag_id, run_id, task_id, map_index)"
    )
    cmd.add_argument(
        "--result-uri", help="where to write the result record when the job ends, succeeded or failed"
    )


def _add_score_partition(sub: Any) -> None:
    cmd = sub.add_parser(
        "score-partition", help="score one partition with a pinned champion (one remote job per partition)"
    )
    cmd.add_argument("pipeline")
    cmd.add_argument("--partition", required=True, help="URI of the partition (a file or a folder)")
    cmd.add_argument(
        "--champion",
        required=True,
        help="JSON of the pinned champion the resolve task returned, or the URI of a file holding it",
    )
    cmd.add_argument("--run-id", default="manual", help="the Airflow run id, written with the predictions")
    _add_remote_options(cmd)
    cmd.set_defaults(func=_score_partition)


@dataclass(frozen=True)
class Outcome:
    """How a command ended: its exit status, its result, or its one-line error."""

    code: int
    result: Any = None
    error: str | None = None
    nothing_to_do: bool = False

    @classmethod
    def of_error(cls, exc: MlopsError) -> Outcome:
        """A core error: 2 when it is deterministic, else 75."""
        code = remote.EXIT_DETERMINISTIC if exc.deterministic else remote.EXIT_TRANSIENT
        return cls(code, error=str(exc))


def _attempt(args: argparse.Namespace) -> Outcome:
    """Run the command; every way it can end becomes an ``Outcome`` (nothing escapes but a signal)."""
    try:
        return Outcome(0, args.func(args))
    except NothingToDo as exc:
        return Outcome(0, error=str(exc), nothing_to_do=True)
    except MlopsError as exc:
        return Outcome.of_error(exc)
    except Exception as exc:
        # Not a failure the core classifies (a bug, or an error no stage translates): the traceback
        # goes to the job's log for whoever fixes it; the task gets one line, and a retry.
        log.exception("Unexpected %s; the traceback follows", type(exc).__name__)
        message = f"unexpected {type(exc).__name__}: {exc} (the job's log has the traceback)"
        return Outcome(remote.EXIT_TRANSIENT, error=one_line(message, RECORD_MESSAGE_CHARS))


def _record_targets(args: argparse.Namespace, platform: platforms.Platform) -> list[str]:
    """Where this command's result record goes: ``--result-uri`` and the platform's own copies."""
    if args.command not in REMOTE_STAGES:
        return []
    given = [args.result_uri] if getattr(args, "result_uri", None) else []
    return [*given, *platform.record_copies]


def _write_records(args: argparse.Namespace, outcome: Outcome, targets: list[str]) -> Outcome:
    """Write the result record to every target; a record that cannot be written is a transient failure
    (the operator could not tell what the job did), reported in one line."""
    failed = outcome.code != 0 or outcome.nothing_to_do
    payload = (
        _record(args, outcome)
        if failed
        else remote.record(args.command, "succeeded", lineage=_lineage_or_none(args), result=outcome.result)
    )
    for uri in targets:
        try:
            remote.write_record(uri, payload)
        except Exception as exc:
            problem = f"could not write the result record to {uri} ({type(exc).__name__}: {exc}); check that the job may write there"
            error = f"{outcome.error}; and {problem}" if failed else problem
            return Outcome(remote.EXIT_TRANSIENT, error=error)
        log.info("Result record (%s) written to %s", payload["status"], uri)
    if outcome.nothing_to_do:  # a remote stage always has work: the operator must not read this as done
        return Outcome(remote.EXIT_DETERMINISTIC, error=f"nothing to do: {outcome.error}")
    return outcome


def _lineage_or_none(args: argparse.Namespace) -> remote.Lineage | None:
    try:
        return _lineage(args)
    except UsageError:
        return None


def _record(args: argparse.Namespace, outcome: Outcome) -> dict[str, Any]:
    """The record of a failed command: its one-line error and whether a retry may help."""
    error = f"nothing to do: {outcome.error}" if outcome.nothing_to_do else str(outcome.error)
    return remote.record(
        args.command,
        "failed",
        lineage=_lineage_or_none(args),
        error=one_line(error, RECORD_MESSAGE_CHARS),
        deterministic=outcome.code != remote.EXIT_TRANSIENT,
    )


def _finish(args: argparse.Namespace, outcome: Outcome, platform: platforms.Platform) -> int:
    """Records, the platform's failure files, then the output: the error line is the last one printed."""
    targets = _record_targets(args, platform)
    if targets:
        outcome = _write_records(args, outcome, targets)
    if outcome.nothing_to_do:
        print(f"nothing to do: {outcome.error}", file=sys.stderr)
        return 0
    if outcome.code != 0:
        platform.report_failure(one_line(str(outcome.error), RECORD_MESSAGE_CHARS))
        print(f"error: {outcome.error}", file=sys.stderr)
        return outcome.code
    if outcome.result is not None:
        print(json.dumps(outcome.result, indent=2, default=str))
    return 0


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` in a command line that did not parse (to still write its record)."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command; a core error exits with its message and a status that tells a retry apart."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    platform = platforms.detect()
    platform.describe()
    if platform.secondary:
        log.info(
            "This is %s of a multi-machine job; the stages are single-process, so only the primary "
            "runs the stage (set the instance or replica count to 1 to stop paying for this one)",
            platform.secondary,
        )
        return 0
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(platform.arguments(given))
    except MlopsError as exc:  # the command line (or the hyperparameters) is malformed: nothing ran
        args = argparse.Namespace(
            command=given[0] if given else "",
            lineage=_option(given, "--lineage"),
            result_uri=_option(given, "--result-uri"),
        )
        return _finish(args, Outcome.of_error(exc), platform)
    return _finish(args, _attempt(args), platform)
