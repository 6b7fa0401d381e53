"""The contract between an Airflow task and the remote job it starts: command, lineage, result record.

A stage that runs on Kubernetes, SageMaker or Vertex AI runs ``python -m include.mlops <stage>`` in
the project image. The task names itself with a ``Lineage`` (dag, run, task, map index); the job
writes one JSON *result record* at a run-scoped URI under the pipeline's state area in the object
store (``<state>/jobs/<dag>/<run>/<task>[.<map>].json``) when it ends, succeeded or failed. The task
reads the record back after the job ends (never through XCom), and a retried task that finds a
succeeded record reuses it instead of running the job again. Framework-free: the job side imports it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from include.mlops.tags import AIRFLOW_DAG_ID, AIRFLOW_RUN_ID, AIRFLOW_TASK_ID

# The image's entry point; every backend runs it (Dockerfile ENTRYPOINT, pod command, job command).
ENTRY_POINT: tuple[str, ...] = ("python", "-m", "include.mlops")

# Exit statuses of the entry point: 2 = deterministic (bad data, failed gate: do not retry),
# 75 = transient (EX_TEMPFAIL: a service was down; retry).
EXIT_DETERMINISTIC = 2
EXIT_TRANSIENT = 75

RESULT_SCHEMA = 1
Status = Literal["succeeded", "failed"]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


@dataclass(frozen=True)
class Lineage:
    """The Airflow task instance a remote job works for (the try number is left out on purpose:
    every try of the same task shares one lineage, which is how a retry finds finished work)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def tags(self) -> dict[str, str]:
        """The MLflow tags training writes on its run and model version."""
        return {AIRFLOW_DAG_ID: self.dag_id, AIRFLOW_RUN_ID: self.run_id, AIRFLOW_TASK_ID: self.task_id}

    def to_json(self) -> str:
        """Compact JSON, the value of the entry point's ``--lineage`` option."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        """Parse ``--lineage``; a malformed value is a ValueError naming the expected keys."""
        try:
            raw = json.loads(text)
            return cls(
                dag_id=str(raw["dag_id"]),
                run_id=str(raw["run_id"]),
                task_id=str(raw["task_id"]),
                map_index=int(raw.get("map_index", -1)),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"--lineage must be JSON with dag_id, run_id, task_id (and map_index): {text[:200]!r} ({exc})"
            ) from None

    def digest(self, length: int = 10) -> str:
        """A short stable hash of the lineage, for names with a length limit."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:length]

    def job_name(self, pipeline: str, stage: str, *, max_length: int = 63) -> str:
        """A name valid as a pod name, a SageMaker job name and a Vertex display name:
        ``<pipeline>-<stage>-<digest>`` in lower case letters, digits and '-', at most ``max_length``."""
        digest = self.digest()
        prefix = re.sub(r"[^a-z0-9-]+", "-", f"{pipeline}-{stage}".lower()).strip("-")
        return f"{prefix[: max_length - len(digest) - 1].rstrip('-')}-{digest}"

    def labels(self) -> dict[str, str]:
        """Kubernetes / Vertex labels naming the task instance (values sanitised to label syntax).

        An unmapped task's map index is ``none``: ``-1`` is not a Kubernetes label value (it must
        start with a letter or digit)."""

        def label(value: str) -> str:
            return re.sub(r"[^A-Za-z0-9_.-]+", "_", value)[:63].strip("_.-") or "none"

        return {
            "airflow-mlops/dag-id": label(self.dag_id),
            "airflow-mlops/task-id": label(self.task_id),
            "airflow-mlops/run-digest": self.digest(),
            "airflow-mlops/map-index": str(self.map_index) if self.map_index >= 0 else "none",
        }


def result_uri(state_uri: str, lineage: Lineage) -> str:
    """Where the job for ``lineage`` writes its result record, under the pipeline's state area."""
    suffix = "" if lineage.map_index < 0 else f".{lineage.map_index}"
    parts = [_UNSAFE.sub("_", p) for p in (lineage.dag_id, lineage.run_id, lineage.task_id + suffix)]
    return f"{state_uri.rstrip('/')}/jobs/{parts[0]}/{parts[1]}/{parts[2]}.json"


def record(
    stage: str,
    status: Status,
    *,
    lineage: Lineage | None,
    result: Any = None,
    error: str | None = None,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """A result record: what the job did, or the one-line reason it failed and whether to retry."""
    return {
        "schema": RESULT_SCHEMA,
        "stage": stage,
        "status": status,
        "lineage": asdict(lineage) if lineage else None,
        "result": result,
        "error": error,
        "deterministic": deterministic,
        "finished_at": time.time(),
    }


def write_record(uri: str, payload: dict[str, Any]) -> None:
    """Write the record atomically (a reader sees the whole record or none).

    A local file is written under a temporary name and renamed; an object store's single PUT is
    already all-or-nothing, so the record is one request there (no copy and delete).
    """
    from include.mlops import storage

    if "://" not in uri or uri.startswith("file://"):
        storage.write_json(uri, payload)
        return
    fs, path = storage.fs_for(uri)
    fs.pipe_file(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def read_record(uri: str) -> dict[str, Any] | None:
    """The record at ``uri``, ``None`` if the job has not written one (yet)."""
    from include.mlops import storage

    if not storage.exists(uri):
        return None
    payload = storage.read_json(uri)
    if not isinstance(payload, dict) or payload.get("schema") != RESULT_SCHEMA:
        return None
    return payload
