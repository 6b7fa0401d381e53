"""Batch inference: the champion scores the scoring inputs, one partition at a time, streamed.

Why it is shaped this way (layout and guarantees in ``docs/inference.md``):

* A **partition** (``partitions.py``) is the unit of work, of retry and of output: one file
  directly under ``inference.input``, or one folder there with every file in it. The DAG maps one
  task over each pending partition, so partitions score in parallel and a failed one retries alone.
* The champion is **resolved once per run** (``champion.py``) to a pinned ``models:/<name>/<version>``
  URI; every partition loads that URI, so an alias that moves during the run cannot mix versions.
* A partition is **streamed** chunk by chunk (``chunks.py``), so memory depends on the chunk, not
  on the size of the input. A classifier runs once per chunk (``predict_proba``; labels are its
  argmax, verified against ``predict`` on the first rows), not twice.
* Its output is **committed atomically** (``writer.py``): re-scoring a partition replaces exactly
  that output, and leftovers of a killed attempt are removed by the next one.
* Inputs are checked against the model signature (``signature.py``) before the old output is
  touched, and a mismatch names every missing and every mistyped column.

This module keeps the names the Airflow operators and the monitoring code import from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.mlops import storage
from include.mlops.data.reading import detect_format
from include.mlops.errors import DataError
from include.mlops.predictor import Predictor
from include.mlops.scoring.champion import PinnedChampion, load_model, pin_champion, resolve_champion
from include.mlops.scoring.chunks import Chunk, ReadPlan, file_columns, read_chunks, total_rows
from include.mlops.scoring.partitions import (
    PREDICTIONS_FILE,
    Partition,
    describe_partition,
    list_partitions,
    output_folder,
    partitions,
)
from include.mlops.scoring.progress import PROGRESS_SECONDS, Progress
from include.mlops.scoring.signature import check_columns
from include.mlops.scoring.writer import PartitionWriter, constant
from include.mlops.spec import PipelineSpec
from include.mlops.stages import staged

__all__ = [
    "PREDICTIONS_FILE",
    "PROGRESS_SECONDS",
    "ROW_ID",
    "Partition",
    "PartitionJob",
    "PinnedChampion",
    "describe_partition",
    "list_partitions",
    "load_model",
    "output_folder",
    "partitions",
    "pin_champion",
    "resolve_champion",
    "score",
    "score_partition",
    "scored_batches",
    "summarize",
]

log = logging.getLogger(__name__)

ROW_ID = "row_id"  # the row id column when the spec declares no id column: position in the partition


@dataclass(frozen=True)
class PartitionJob:
    """Everything fixed before the first row is read: the partition, the pinned model, how to read."""

    partition: Partition
    champion: PinnedChampion
    label: str  # "pipeline <name>: <partition>", the prefix of every log line and error
    labels: dict[str, str]  # file URI -> label naming that file (the partition's label for one file)
    formats: dict[str, str]  # file URI -> "parquet" | "csv"
    plan: ReadPlan
    id_name: str  # the id column of the output

    @classmethod
    def plan_for(
        cls, spec: PipelineSpec, partition: Partition, champion: PinnedChampion, model: Any
    ) -> PartitionJob:
        """The job for one partition scored by ``model`` (the pinned champion, loaded)."""
        label = f"pipeline {spec.name}: {partition.name}"
        single = len(partition.files) == 1
        return cls(
            partition=partition,
            champion=champion,
            label=label,
            labels={f: label if single else f"{label}/{storage.basename(f)}" for f in partition.files},
            formats={f: detect_format(f, spec.inference.format) for f in partition.files},
            plan=ReadPlan(
                columns=champion.columns(model),
                id_column=spec.data.id_column,
                chunk_rows=spec.inference.chunk_rows,
                model=champion.label,
            ),
            id_name=spec.data.id_column or ROW_ID,
        )

    def check_signature(self) -> None:
        """Every file against the signature, from its footer or header: before any output is touched."""
        for uri in self.partition.files:
            found = file_columns(uri, self.formats[uri], self.labels[uri])
            check_columns(self.labels[uri], self.plan.model, found, self.plan.columns, self.plan.id_column)


def prediction_table(
    job: PartitionJob, predictor: Predictor, chunk: Chunk, first_row: int, run_id: str, label: str
) -> Any:
    """One chunk's output rows: id, prediction columns, and the model version and run that made them."""
    import numpy as np
    import pyarrow as pa

    try:
        predicted = predictor(chunk.features)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{label}: {job.champion.label} cannot score it: {str(exc).splitlines()[0]}"
        ) from None
    ids = chunk.ids if chunk.ids is not None else np.arange(first_row, first_row + chunk.rows)
    return pa.table(
        {
            job.id_name: ids,
            **predicted,
            "model_version": constant(job.champion.version, chunk.rows),
            "run_id": constant(run_id, chunk.rows),
        }
    )


def write_predictions(
    job: PartitionJob, predictor: Predictor, writer: PartitionWriter, progress: Progress, run_id: str
) -> None:
    """Stream every file of the partition through the model into the writer, reporting progress."""
    sizes = job.partition.file_sizes()
    total_bytes, bytes_before = max(sum(sizes.values()), 1), 0
    for uri in job.partition.files:
        label = job.labels[uri]
        for chunk in read_chunks(uri, job.formats[uri], label, job.plan):
            writer.write(prediction_table(job, predictor, chunk, writer.rows, run_id, label), label)
            fraction = None
            if chunk.bytes_read is not None:
                fraction = (bytes_before + chunk.bytes_read) / total_bytes
            progress.update(chunk.rows, fraction)
        bytes_before += sizes[uri]


def build_manifest(job: PartitionJob, writer: PartitionWriter, run_id: str, seconds: float) -> dict[str, Any]:
    """The ``_SUCCESS`` manifest: what was scored, by which version, in which run, into which file."""
    partition, champion = job.partition, job.champion
    return {
        "partition": partition.name,
        "input": partition.uri,
        "inputs": list(partition.files),
        "fingerprint": [list(f) for f in partition.fingerprint],
        "rows": writer.rows,
        "model": champion.model,
        "model_version": champion.version,
        "model_uri": champion.model_uri,
        "run_id": run_id,
        "scored_at": time.time(),
        "seconds": round(seconds, 3),
        "output": writer.target,
    }


@staged("score")
def score_partition(
    spec: PipelineSpec,
    partition_uri: str,
    *,
    champion: PinnedChampion | Mapping[str, Any],
    run_id: str,
    model: Any = None,
    tracking_uri: str | None = None,
    progress_every: float = PROGRESS_SECONDS,
) -> dict[str, Any]:
    """Score one partition into ``<output>/<partition>/predictions.parquet``; return its manifest.

    ``champion`` is what ``resolve_champion`` returned for this run (the record or its XCom dict);
    ``model`` may be passed when it is already loaded (scoring several partitions in one process).
    """
    pinned = PinnedChampion.of(champion)
    partition = describe_partition(partition_uri)
    model = model if model is not None else load_model(pinned, tracking_uri)
    job = PartitionJob.plan_for(spec, partition, pinned, model)
    job.check_signature()  # a mismatch leaves the old output as it was
    writer = PartitionWriter(output_folder(spec, partition.uri), job.id_name)
    writer.begin()
    progress = Progress(job.label, total_rows(partition.files, job.formats), progress_every)
    rows_known = f", {progress.total} rows" if progress.total else ""
    log.info(
        "%s: scoring %d file(s)%s with %s", job.label, len(partition.files), rows_known, pinned.model_uri
    )
    with writer.open(job.label):
        write_predictions(job, Predictor(model), writer, progress, run_id)
    seconds = progress.seconds()
    rate = writer.rows / max(seconds, 1e-9)
    log.info(
        "%s: %d rows scored in %.1f s (%.0f rows/s) -> %s",
        job.label,
        writer.rows,
        seconds,
        rate,
        writer.target,
    )
    manifest = build_manifest(job, writer, run_id, seconds)
    writer.commit(manifest)
    return manifest


def summarize(
    champion: PinnedChampion | Mapping[str, Any], manifests: list[dict[str, Any]]
) -> dict[str, Any]:
    """What one run scored: the version, and per partition its manifest (JSON, for XCom)."""
    pinned = PinnedChampion.of(champion)
    manifests = [m for m in manifests if m]
    return {
        "model": pinned.model,
        "model_version": pinned.version,
        "model_uri": pinned.model_uri,
        "partitions": len(manifests),
        "rows": sum(m["rows"] for m in manifests),
        "outputs": [m["output"] for m in manifests],
        "files": manifests,
    }


@staged("score")
def score(
    spec: PipelineSpec, *, run_id: str, rescore: bool = False, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Score every pending partition in this process, one after the other (CLI, tests).

    The DAG does the same with one mapped task per partition.
    """
    pending = list_partitions(spec, rescore=rescore)
    champion = pin_champion(spec, tracking_uri)
    model = load_model(champion, tracking_uri)
    manifests = [
        score_partition(spec, uri, champion=champion, run_id=run_id, model=model, tracking_uri=tracking_uri)
        for uri in pending
    ]
    return summarize(champion, manifests)


def scored_batches(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Manifests of every complete prediction output, most recent first."""
    found = []
    for folder in storage.list_dirs(spec.uri("predictions")):
        if storage.is_complete(folder):
            found.append(storage.read_json(storage.join(folder, storage.SUCCESS)))
    return sorted(found, key=lambda m: m["scored_at"], reverse=True)
