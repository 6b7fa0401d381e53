"""``ping``: the core's no-op command, a pipeline task with no work in it.

Loading the spec is all it does, so timing it through Airflow measures what every task pays on top
of its work (process start, imports, the scheduler's hop); ``bench/orchestration.py`` does that.
"""

from __future__ import annotations

from typing import Any

from include.mlops.spec import find_spec


def ping(pipeline: str) -> dict[str, Any]:
    """Load ``pipeline``'s spec and return; a broken or missing spec raises ``SpecError`` as any stage would."""
    spec = find_spec(pipeline)
    return {"pipeline": spec.name, "ok": True}
