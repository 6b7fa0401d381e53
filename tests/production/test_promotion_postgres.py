"""Two promotions of different candidates at the same moment, in two processes (two workers), with
the promotion lock in Postgres: exactly one wins, the other is refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.mlops import tracking
from include.mlops.model import history, registry
from include.mlops.spec import find_spec
from include.mlops.tags import GATE_DECISION, GATE_PASSED

pytestmark = pytest.mark.production

ROOT = Path(__file__).resolve().parents[2]
PROMOTER = """
import json, sys
from include.mlops import tracking
from include.mlops.errors import PromotionRefused
from include.mlops.model import registry
from include.mlops.spec import find_spec

spec = find_spec("churn")
version, expected, worker = sys.argv[1:4]
tracking.client()  # MLflow imported and connected before the start signal
print("ready", flush=True)
sys.stdin.readline()
lineage = {"airflow.dag_id": "churn__promote", "airflow.run_id": f"run-on-{worker}"}
try:
    registry.promote(spec, version=version, expected_champion=expected, lineage=lineage)
    print(json.dumps({"outcome": "promoted"}), flush=True)
except PromotionRefused as exc:
    print(json.dumps({"outcome": "refused", "reason": str(exc)}), flush=True)
"""


@pytest.fixture
def churn(pg_url, state, pipelines_dir):
    return find_spec("churn")


def _gated_version(client, folder: Path) -> str:
    """A registered version whose gate passed (promotion reads only its tags and the aliases)."""
    source = folder / f"model-{len(list(folder.iterdir()))}"
    source.mkdir()
    version = client.create_model_version("churn", source.as_uri(), tags={GATE_DECISION: GATE_PASSED})
    return str(version.version)


def test_two_workers_promoting_different_candidates_at_once_one_wins(churn, tmp_path):
    client = tracking.client()
    client.create_registered_model("churn")
    models = tmp_path / "models"
    models.mkdir()
    v1 = _gated_version(client, models)
    registry.promote(churn, version=v1, expected_champion=None)
    candidates = [_gated_version(client, models) for _ in range(2)]  # both gated against v1
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, version, v1, f"worker-{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i, version in enumerate(candidates)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", worker.stderr
    for worker in workers:  # both start now
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outcomes = {}
    for version, worker in zip(candidates, workers, strict=True):
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err
        outcomes[version] = json.loads(out.strip().splitlines()[-1])
    promoted = [v for v, o in outcomes.items() if o["outcome"] == "promoted"]
    assert len(promoted) == 1, outcomes
    loser = next(v for v in candidates if v not in promoted)
    assert "the champion is now" in outcomes[loser]["reason"]
    aliases = registry.aliases(churn)
    assert (aliases["champion"], aliases["previous_champion"]) == (promoted[0], v1)
    actions = [(e["action"], e["to"]) for e in history.entries(tracking.client(), "churn")]
    assert actions == [("promote", v1), ("promote", promoted[0]), ("refused", loser)]
