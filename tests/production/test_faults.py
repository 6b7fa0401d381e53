"""Faults survived on the native production stack, with nothing lost or doubled (issue 13, item 5).

On the session's stack (``FaultStack``: the production stack of ``tools.prod_stack`` with fault
hooks, and a task heartbeat timeout of 30 s instead of 300 s so that a dead worker's task is retried
within the test; see ``tests/production/stack_fixtures.py``), with the pipeline ``faulty`` (churn
under its own name), driven through the real scheduler. The first model is trained, gated, promoted
and used for scoring once (``run_short_path``); each test then breaks one thing and checks that the
run finishes and that nothing was lost or done twice. The tests run in file order: each one leaves
the stack whole (a killed worker or server is started again, the object store reconnected), and
the modules after this one run on it (the scenario among them: the stack still works).

Postgres restarted during a run (the last test of the module): the scheduler, triggerer and dag-processor exit when their database connection is cut;
the stack's supervisor (``tools.supervisor``, the native stand-in for compose's restart policy and
Kubernetes' liveness probes) starts them again, and the run finishes.

Two races run in the core, not through the scheduler: the ingest and promote DAGs run one run at a
time (``max_active_runs=1``), so two claims or two promotions at the same moment come from two
processes with the two workers' environments (their own folders and host names), as two hosts
whose tasks overlap would.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.production.faults import FaultStack
from tools.airflow_api import AirflowApi
from tools.prod_stack import BUCKETS
from tools.scenario import run_short_path

pytestmark = [pytest.mark.production, pytest.mark.e2e, pytest.mark.slow]

PIPELINE = "faulty"  # churn under its own name: see tests/production/stack_fixtures.py
RUN_TIMEOUT = 600.0


def dag(stage: str) -> str:
    """The pipeline's DAG id of ``stage``."""
    return f"{PIPELINE}__{stage}"


@pytest.fixture(scope="module")
def stack(prod_module_env: FaultStack) -> FaultStack:
    """The session's production stack (a ``FaultStack``), this module's process in its environment."""
    return prod_module_env


@pytest.fixture(scope="module")
def api(stack: FaultStack) -> AirflowApi:
    """The stack's REST API, with a first champion (v1) that has scored one partition."""
    client = AirflowApi(stack.api_url, *stack.admin)
    outcome = run_short_path(client, PIPELINE, rows=4000, dataset="churn")
    assert outcome.failures == [], (outcome.failures, outcome.steps)
    return client


# Helpers ------------------------------------------------------------------------------------------
def spec() -> Any:
    from include.mlops.spec import find_spec

    return find_spec(PIPELINE)


def fresh() -> None:
    """Forget this process's cached listings of the object store (s3fs caches them per instance):
    what the tasks wrote since must be seen."""
    from include.mlops import storage

    storage.fs_for(f"s3://{BUCKETS['data']}")[0].invalidate_cache()


def task(api: AirflowApi, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """One task instance of a run (from the run's list: run ids need no quoting there)."""
    found = [
        ti
        for ti in api.task_instances(dag_id, run_id)
        if ti["task_id"] == task_id and ti.get("map_index", -1) == map_index
    ]
    assert found, f"{dag_id} {run_id} has no task {task_id}[{map_index}]"
    return found[0]


def wait_running(
    api: AirflowApi, dag_id: str, run_id: str, task_id: str, timeout: float = 300
) -> dict[str, Any]:
    """The first task instance of ``task_id`` (any map index) that runs on a known host."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in api.task_instances(dag_id, run_id):
            if ti["task_id"] == task_id and ti["state"] == "running" and ti.get("hostname"):
                return ti
        if api.run(dag_id, run_id)["state"] in ("success", "failed"):
            break
        time.sleep(0.3)
    states = {f"{t['task_id']}[{t.get('map_index')}]": t["state"] for t in api.task_instances(dag_id, run_id)}
    raise AssertionError(f"{task_id} of {dag_id} {run_id} never ran on a known host: {states}")


def versions_of_run(run_id: str) -> list[str]:
    """The model versions registered by the Airflow run ``run_id`` (its lineage tag)."""
    from include.mlops import tracking
    from include.mlops.tags import AIRFLOW_RUN_ID

    client = tracking.client()
    model = spec().model_name
    return sorted(
        str(v.version)
        for v in tracking.model_versions(client, model, None)
        if (v.tags or {}).get(AIRFLOW_RUN_ID) == run_id
    )


def kill_host_of(
    stack: FaultStack, api: AirflowApi, dag_id: str, run_id: str, task_id: str, *, after: float
) -> tuple[dict[str, Any], int]:
    """Wait until ``task_id`` has run for ``after`` s, then SIGKILL its worker mid-task; returns the
    task instance as it was and the worker's index."""
    ti = wait_running(api, dag_id, run_id, task_id)
    time.sleep(after)
    now = task(api, dag_id, run_id, task_id, ti.get("map_index", -1))
    assert now["state"] == "running", f"{task_id} finished before it could be killed ({now['state']})"
    index = stack.worker_index(ti["hostname"])
    killed = stack.kill_worker(index)
    print(f"killed {ti['hostname']} ({len(killed)} processes) while {task_id}[{ti.get('map_index')}] ran")
    return ti, index


def assert_retried_elsewhere(
    stack: FaultStack, api: AirflowApi, dag_id: str, run_id: str, killed: dict[str, Any], index: int
) -> None:
    """The killed task instance succeeded on a later try, on the other worker."""
    after = task(api, dag_id, run_id, killed["task_id"], killed.get("map_index", -1))
    assert after["state"] == "success", after
    assert after["try_number"] > killed["try_number"], (killed["try_number"], after["try_number"])
    assert after["hostname"] != stack.worker_name(index), after["hostname"]
    assert after["hostname"] in stack.worker_names(), after["hostname"]


def run_through_a_killed_host(
    stack: FaultStack, api: AirflowApi, stage: str, task_id: str, *, after: float
) -> str:
    """Trigger ``stage``, SIGKILL the host of its ``task_id`` mid-task (``kill_host_of``), check that
    the run succeeds with the task retried on the other worker, bring the host back; the run id."""
    run_id = api.trigger(dag(stage))
    killed, index = kill_host_of(stack, api, dag(stage), run_id, task_id, after=after)
    try:
        run = api.wait_run(dag(stage), run_id, timeout=RUN_TIMEOUT)
        assert run["state"] == "success", run
        assert_retried_elsewhere(stack, api, dag(stage), run_id, killed, index)
    finally:
        stack.start_worker(index)
    return run_id


def run_on_workers(stack: FaultStack, code: str, start_in: float = 15.0) -> list[dict[str, Any]]:
    """Run ``code`` on both workers' "hosts" at the same instant; each prints one JSON line."""
    start_at = time.time() + start_in  # both processes import first, then wait for this instant
    prelude = "import json, os, time\n"
    body = textwrap.dedent(code).replace("START_AT", repr(start_at))
    procs = [stack.run_on_worker(i, prelude + body) for i in (1, 2)]
    results = []
    for i, proc in enumerate(procs, 1):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"worker-{i}'s process failed:\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# The faults, in order: each one leaves the stack whole -----------------------------------------
def test_two_hosts_claim_the_same_landed_files_at_once(stack: FaultStack, api: AirflowApi) -> None:
    """Both workers' hosts discover and ingest the same three files at the same instant: each file is
    claimed by one of them and published once (the ledger on Postgres serialises the claims)."""
    from include.mlops.data.datasets import published_datasets
    from include.mlops.data.ledger import Ledger
    from include.mlops.datagen import write_batch

    api.pause(dag("ingest"))  # only the two hosts ingest
    try:
        s = spec()
        before = {d["sha256"] for d in published_datasets(s)}
        stamp = int(time.time()) % 100_000  # new content on every run of the test
        landed = [
            write_batch(
                s,
                f"race-{stamp}-{i}",
                rows=1500,
                seed=stamp + i,
                id_offset=(5 + i) * 1_000_000,
                dataset="churn",
            )
            for i in range(3)
        ]
        results = run_on_workers(
            stack,
            """
            from include.mlops.data.ingest import discover, ingest_claimed
            from include.mlops.spec import find_spec
            spec = find_spec("faulty")
            host = os.environ["MLOPS_WORKER_HOSTNAME"]
            time.sleep(max(0.0, START_AT - time.time()))
            claimed = discover(spec, run_id=f"race-{host}")
            done = {uri: ingest_claimed(spec, uri, run_id=f"race-{host}").status for uri in claimed}
            print(json.dumps({"host": host, "claimed": claimed, "done": done}))
            """,
        )
    finally:
        api.unpause(dag("ingest"))
    claims = [set(r["claimed"]) for r in results]
    print({r["host"]: sorted(r["claimed"]) for r in results})
    assert not claims[0] & claims[1], f"a file was claimed by both hosts: {claims[0] & claims[1]}"
    assert claims[0] | claims[1] == set(landed), (claims, landed)
    assert all(status == "published" for r in results for status in r["done"].values()), results
    entries = [e for e in Ledger().entries(PIPELINE) if e.uri in landed]
    assert sorted(e.uri for e in entries) == sorted(landed), entries
    assert {(e.state, e.outcome) for e in entries} == {("done", "published")}, entries
    fresh()
    new = [d for d in published_datasets(s) if d["sha256"] not in before]
    assert sorted(d["source"] for d in new) == sorted(Path(u).name for u in landed), new


def test_object_store_unreachable_during_ingestion(stack: FaultStack, api: AirflowApi) -> None:
    """The object store refuses connections while a file is validated: the run fails, the file stays
    in landing, no dataset of it is visible; once the store is back the next run publishes it once."""
    from include.mlops import storage
    from include.mlops.data.datasets import published_datasets
    from include.mlops.data.ledger import Ledger
    from include.mlops.datagen import write_batch

    s = spec()
    api.pause(dag("train"))  # the dataset would start a training: not this test's business
    try:
        uri = write_batch(s, "cut-001", rows=60000, seed=51, id_offset=9_000_000, dataset="churn")
        digest = storage.sha256(uri)
        run_id = api.trigger(dag("ingest"))
        wait_running(api, dag("ingest"), run_id, "validate")
        stack.cut_object_store()
        try:
            run = api.wait_run(dag("ingest"), run_id, timeout=RUN_TIMEOUT)
        finally:
            stack.restore_object_store()
        assert run["state"] == "failed", run
        fresh()
        assert uri in storage.list_files(s.uri("landing")), "the landed file stays in landing"
        assert digest not in {d["sha256"] for d in published_datasets(s)}, "no dataset of it is visible"
        assert not [e for e in Ledger().entries(PIPELINE) if e.uri == uri and e.state == "claimed"]

        again = api.wait_run(dag("ingest"), api.trigger(dag("ingest")), timeout=RUN_TIMEOUT)
        assert again["state"] == "success", again
    finally:
        api.unpause(dag("train"))
    fresh()
    assert uri not in storage.list_files(s.uri("landing"))
    published = [d for d in published_datasets(s) if d["sha256"] == digest]
    assert len(published) == 1, published
    rows = [e for e in Ledger().entries(PIPELINE) if e.uri == uri]
    assert [(e.state, e.outcome) for e in rows] == [("done", "published")], rows


def test_worker_killed_during_training(stack: FaultStack, api: AirflowApi) -> None:
    """SIGKILL of the worker running ``train``: retried on the other worker; one model version."""
    api.pause(dag("evaluate"))  # the candidate is gated in the MLflow test below
    run_id = run_through_a_killed_host(stack, api, "train", "train", after=3.0)
    versions = versions_of_run(run_id)
    assert len(versions) == 1, f"model versions of run {run_id}: {versions}"
    assert api.xcom(dag("train"), run_id, "train")["version"] == versions[0]


def test_worker_killed_during_scoring(stack: FaultStack, api: AirflowApi) -> None:
    """SIGKILL of a worker running a ``score`` task: retried on the other worker; one prediction file
    per partition in the object store."""
    from include.mlops.datagen import write_batch

    s = spec()
    partitions = [
        write_batch(
            s,
            f"score-kill-{i}",
            rows=120000,
            seed=60 + i,
            id_offset=(20 + i) * 1_000_000,
            scoring=True,
            dataset="churn",
        )
        for i in range(2)
    ]
    run_through_a_killed_host(stack, api, "inference", "score", after=1.5)
    keys = stack.s3_keys(BUCKETS["data"], f"predictions/{PIPELINE}/")
    for partition in partitions:
        folder = f"predictions/{PIPELINE}/{Path(partition).name}/"
        files = [k for k in keys if k.startswith(folder) and k.endswith("predictions.parquet")]
        assert [k.rsplit("/", 1)[-1] for k in files] == ["predictions.parquet"], files
    folders: dict[str, int] = {}
    for key in keys:
        if key.endswith("/predictions.parquet"):
            folders[key.rsplit("/", 1)[0]] = folders.get(key.rsplit("/", 1)[0], 0) + 1
    assert set(folders.values()) == {1}, folders


def _decisions(version: str) -> list[dict[str, Any]]:
    """Every gate decision logged to ``version``'s MLflow run, oldest first."""
    from include.mlops import tracking

    client = tracking.client()
    run = tracking.get_version(client, spec().model_name, version).run_id
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in client.list_artifacts(run, "gate"):
            if "/decision-" in artifact.path:
                found.append(json.loads(Path(client.download_artifacts(run, artifact.path, tmp)).read_text()))
    return sorted(found, key=lambda d: d.get("evaluated_at") or 0)


def test_mlflow_down_during_the_gate(stack: FaultStack, api: AirflowApi) -> None:
    """The MLflow server down for 30 s while ``evaluate`` gates a candidate: the gate finishes, with
    the same decision as a second gate of the same candidate without an outage."""
    from include.mlops.model import registry

    s = spec()
    api.pause(dag("promote"))  # the champion must not move between the two gates
    try:
        candidate = registry.aliases(s)["challenger"]
        assert candidate, "the candidate of the training test is the challenger"
        api.unpause(dag("evaluate"))
        run_id = api.trigger(dag("evaluate"), {"version": candidate})
        wait_running(api, dag("evaluate"), run_id, "evaluate")
        stack.stop_mlflow()
        time.sleep(30)
        stack.start_mlflow()
        outage = api.wait_run(dag("evaluate"), run_id, timeout=RUN_TIMEOUT)
        quiet = api.wait_run(
            dag("evaluate"), api.trigger(dag("evaluate"), {"version": candidate}), timeout=RUN_TIMEOUT
        )
    finally:
        api.unpause(dag("promote"))
    assert outage["state"] == quiet["state"], (outage["state"], quiet["state"])
    gated = task(api, dag("evaluate"), run_id, "evaluate")
    assert (gated["duration"] or 0) > 25, f"the gate was not waiting on MLflow during the outage: {gated}"
    decisions = _decisions(candidate)
    assert len(decisions) >= 2, decisions
    first, last = decisions[0], decisions[-1]
    for key in (
        "passed",
        "reasons",
        "candidate_version",
        "champion_version",
        "candidate_metrics",
        "champion_metrics",
    ):
        assert first.get(key) == last.get(key), (key, first.get(key), last.get(key))
    print(f"gate of v{candidate} with and without the outage: passed={first['passed']} ({outage['state']})")


def passed_candidates(champion: str | None) -> list[str]:
    """Versions other than the champion whose last gate passed, oldest first."""
    from include.mlops import tracking
    from include.mlops.tags import GATE_DECISION, GATE_PASSED

    versions = tracking.model_versions(tracking.client(), spec().model_name, None)
    passed = [str(v.version) for v in versions if (v.tags or {}).get(GATE_DECISION) == GATE_PASSED]
    return sorted((v for v in passed if v != champion), key=int)


def test_two_promotions_at_once_on_two_workers(stack: FaultStack, api: AirflowApi) -> None:
    """Two candidates promoted at the same instant from the two workers' hosts, both against the same
    champion: exactly one wins, the other is refused because the champion moved."""
    from include.mlops.model import history, registry

    s = spec()
    champion = registry.aliases(s)["champion"]
    api.pause(dag("promote"))  # the gate's own promotion would race too: only the two hosts here
    try:
        candidates = passed_candidates(champion)[:2]  # the MLflow test's candidate, if it passed
        while len(candidates) < 2:
            api.pause(dag("evaluate"))
            trained = api.wait_run(dag("train"), api.trigger(dag("train")), timeout=RUN_TIMEOUT)
            assert trained["state"] == "success", trained
            version = api.xcom(dag("train"), trained["dag_run_id"], "train")["version"]
            api.unpause(dag("evaluate"))
            gated = api.wait_run(
                dag("evaluate"), api.trigger(dag("evaluate"), {"version": version}), timeout=RUN_TIMEOUT
            )
            assert gated["state"] == "success", (
                f"v{version} did not pass the gate: {_decisions(version)[-1:]}"
            )
            candidates.append(version)
        results = run_on_workers(
            stack,
            f"""
            from include.mlops.errors import PromotionRefused
            from include.mlops.model import registry
            from include.mlops.spec import find_spec
            spec = find_spec("faulty")
            host = os.environ["MLOPS_WORKER_HOSTNAME"]
            version = {candidates!r}[int(host.rsplit("-", 1)[1]) - 1]
            time.sleep(max(0.0, START_AT - time.time()))
            try:
                done = registry.promote(spec, version=version, expected_champion={champion!r},
                                        lineage={{"airflow.dag_id": "race", "airflow.run_id": host}})
                print(json.dumps({{"host": host, "version": version, "promoted": done["changed"]}}))
            except PromotionRefused as exc:
                print(json.dumps({{"host": host, "version": version, "refused": str(exc)}}))
            """,
        )
    finally:
        api.unpause(dag("promote"))
    print(results)
    winners = [r for r in results if r.get("promoted")]
    refused = [r for r in results if "refused" in r]
    assert len(winners) == 1 and len(refused) == 1, results
    assert "the champion is now v" + winners[0]["version"] in refused[0]["refused"], refused
    assert registry.aliases(s)["champion"] == winners[0]["version"]
    assert registry.aliases(s)["previous_champion"] == champion
    actions = [(e["action"], e["to"]) for e in history.show(s.model_name) if e.get("dag_id") == "race"]
    assert sorted(actions) == sorted(
        [("promote", winners[0]["version"]), ("refused", refused[0]["version"])]
    ), actions


def wait_whole(stack: FaultStack, timeout: float = 300) -> list[str]:
    """Until every component runs and Airflow's health endpoint says all is healthy; the lines of
    the supervisor's log (what it had to start again)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = [p for p in stack.processes() if p not in stack.running()]
        try:
            healthy = not missing and stack._airflow_healthy()
        except (OSError, ValueError):
            healthy = False
        if healthy:
            break
        time.sleep(2)
    else:
        raise AssertionError(f"the stack is not whole again: down {missing}; see {stack.run_dir}")
    return (stack.run_dir / "supervisor.log").read_text().splitlines()


def test_postgres_restarted_during_a_run(stack: FaultStack, api: AirflowApi) -> None:
    """Postgres restarts (``-m fast``: every session of every component cut) while ``train`` runs,
    and stays down 5 s: each component reconnects or, where it exits or stops heartbeating, the
    supervisor starts it again (as ``restart: unless-stopped`` and a liveness probe would); the run
    finishes with one model version, and the stack is whole and healthy again."""
    api.pause(dag("evaluate"))  # only the run that meets the restart matters here
    try:
        run_id = api.trigger(dag("train"))
        wait_running(api, dag("train"), run_id, "train")
        time.sleep(2)
        stack.restart_postgres(down_for=5.0)
        run = api.wait_run(dag("train"), run_id, timeout=RUN_TIMEOUT)
        assert run["state"] == "success", (run, task(api, dag("train"), run_id, "train"))
        versions = versions_of_run(run_id)
        assert len(versions) == 1, f"model versions of run {run_id}: {versions}"
        restarted = [line for line in wait_whole(stack) if "started" in line and "again" in line]
        print("the supervisor started again:", restarted or "nothing")
        # And the stack still works: a run started after the restart finishes too.
        after = api.wait_run(dag("train"), api.trigger(dag("train")), timeout=RUN_TIMEOUT)
        assert after["state"] == "success", after
    finally:
        api.unpause(dag("evaluate"))
