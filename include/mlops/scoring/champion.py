"""The champion of one inference run: resolved once, pinned to a version, loaded by every partition.

Pinning (``models:/<name>/<version>``, not the alias) means an alias that moves during the run
cannot mix two versions in one run's predictions. The pinned record travels through Airflow XCom
as a plain dict, so every function here accepts either the record or that dict.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.mlops import tracking
from include.mlops.errors import DataError, NothingToDo
from include.mlops.scoring.signature import InputColumn
from include.mlops.spec import PipelineSpec
from include.mlops.tracking import alias_version, model_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedChampion:
    """The champion as one model version, with its signature's input columns."""

    model: str
    version: str
    model_uri: str  # models:/<name>/<version>: a version, never the alias
    mlflow_run_id: str | None = None
    inputs: tuple[InputColumn, ...] | None = None  # None: the model has no named signature
    resolved_at: float | None = None

    @property
    def label(self) -> str:
        """``<model> v<version>``, as error messages name it."""
        return f"{self.model} v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the ``resolve`` task's XCom value)."""
        return {
            "model": self.model,
            "version": self.version,
            "model_uri": self.model_uri,
            "mlflow_run_id": self.mlflow_run_id,
            "inputs": [c.to_dict() for c in self.inputs] if self.inputs is not None else None,
            "resolved_at": self.resolved_at,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PinnedChampion:
        """Read the JSON form back (from XCom, or a file)."""
        inputs = raw.get("inputs")
        return cls(
            model=raw["model"],
            version=str(raw["version"]),
            model_uri=raw["model_uri"],
            mlflow_run_id=raw.get("mlflow_run_id"),
            inputs=tuple(InputColumn.from_dict(c) for c in inputs) if inputs is not None else None,
            resolved_at=raw.get("resolved_at"),
        )

    @classmethod
    def of(cls, value: PinnedChampion | Mapping[str, Any]) -> PinnedChampion:
        """Accept the record or its dict form at a seam."""
        return value if isinstance(value, PinnedChampion) else cls.from_dict(value)

    def columns(self, model: Any) -> list[InputColumn]:
        """The columns the model reads: the signature's, else the estimator's feature names."""
        if self.inputs:
            return list(self.inputs)
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            raise DataError(
                f"{self.model_uri} has neither a signature nor feature names: cannot tell which columns it reads"
            )
        return [InputColumn(str(n)) for n in names]


def pin_champion(spec: PipelineSpec, tracking_uri: str | None = None) -> PinnedChampion:
    """The champion as a pinned version, with its signature's input columns."""
    import mlflow

    client = tracking.client(tracking_uri)
    with tracking.service_errors(tracking_uri):
        version = alias_version(client, spec.model_name, "champion")
        if version is None:
            raise NothingToDo(f"pipeline {spec.name}: there is no champion model yet; nothing to score with")
        model_version = client.get_model_version(spec.model_name, version)
        uri = f"models:/{spec.model_name}/{version}"
        signature = mlflow.models.get_model_info(uri).signature
    inputs = None
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        inputs = tuple(InputColumn(c["name"], str(c.get("type", ""))) for c in signature.inputs.to_dict())
    log.info("Champion of %s resolved to %s for this run", spec.model_name, uri)
    return PinnedChampion(
        model=spec.model_name,
        version=version,
        model_uri=uri,
        mlflow_run_id=model_version.run_id,
        inputs=inputs,
        resolved_at=time.time(),
    )


def resolve_champion(spec: PipelineSpec, tracking_uri: str | None = None) -> dict[str, Any]:
    """``pin_champion`` as JSON, for XCom: resolved once per run, every partition loads ``model_uri``."""
    return pin_champion(spec, tracking_uri).to_dict()


def load_model(champion: PinnedChampion | Mapping[str, Any], tracking_uri: str | None = None) -> Any:
    """The pinned champion version as a scikit-learn model (read in place from a local store)."""
    import mlflow

    pinned = PinnedChampion.of(champion)
    client = tracking.client(tracking_uri)
    started = time.monotonic()
    with tracking.service_errors(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        model = mlflow.sklearn.load_model(str(model_dir(client, pinned.model, pinned.version, tmp)))
    log.info("Loaded %s in %.1f s", pinned.model_uri, time.monotonic() - started)
    return model
