"""``PingOperator``: a pipeline task that does no work (the core's ``ping``).

It exists to measure and check the machinery every task goes through (scheduler hop, worker
process, DAG re-parse, spec loading) without the cost of a stage: ``bench/orchestration.py`` chains
ten of them and ``tests/tools/test_preload.py`` runs them after the worker preloaded libraries.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_airflow.operators.base import PipelineOperator


class PingOperator(PipelineOperator):
    """Load the pipeline's spec through the core and return ``{"pipeline": ..., "ok": true}``."""

    ui_color = "#f4f4f4"

    def run(self, context: Context) -> dict[str, Any]:
        """Call the core's no-op command (it only loads the spec)."""
        from include.mlops.ping import ping

        return ping(self.pipeline)
