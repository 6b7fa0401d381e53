"""One DAG family per pipeline spec in include/pipelines/ (see docs/spec.md).

A broken spec does not take the other pipelines down: its error is raised by a placeholder DAG's
validation, which Airflow records as one import error for this file naming the broken spec, while
the DAGs of every valid spec are still loaded.
"""

from __future__ import annotations

from airflow.sdk import DAG

from include.mlops.errors import SpecError
from include.mlops.spec import load_specs
from mlops_airflow.factory import build_dags


class _BrokenSpecs(DAG):
    """Never scheduled: exists only to surface spec errors as an import error."""

    def validate(self) -> None:
        raise SpecError("broken pipeline spec(s):\n" + "\n".join(self.doc_md.splitlines()))


_specs, _errors = load_specs()
for _spec in _specs:
    globals().update(build_dags(_spec))
if _errors:
    broken_pipeline_specs = _BrokenSpecs(
        "mlops__broken_specs", schedule=None, doc_md="\n".join(_errors.values())
    )
