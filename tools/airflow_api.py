"""A small client for the Airflow 3 REST API (v2), enough to drive and watch DAG runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

FINISHED = {"success", "failed"}


class ApiError(Exception):
    """An API call failed or a wait timed out; the message says which call and what came back."""


class AirflowApi:
    """Drives a running Airflow through its public REST API, as a user would (no DB access).

    Tests and tools use its public methods; ``_request`` stays private so that every endpoint the
    project relies on has one named method here.
    """

    def __init__(self, base_url: str, username: str, password: str) -> None:
        """Only store the address and credentials: a token is fetched on the first call."""
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """One JSON call; an HTTP error becomes ``ApiError`` with the start of the response body."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
        return json.loads(payload) if payload else None

    def token(self) -> str:
        """A bearer token for the configured user, fetched once per client."""
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def dag_ids(self) -> list[str]:
        """The ids of every parsed DAG."""
        return [d["dag_id"] for d in self._request("GET", "/api/v2/dags?limit=1000")["dags"]]

    def import_errors(self) -> list[dict[str, Any]]:
        """The DAG files that failed to import, with their tracebacks."""
        return self._request("GET", "/api/v2/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed ``dag_ids`` (naming import errors if it has not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = set(dag_ids) - set(self.dag_ids())
            if not missing:
                return
            time.sleep(2)
        raise ApiError(
            f"DAGs not parsed within {timeout:.0f}s: {sorted(missing)}; import errors: {self.import_errors()}"
        )

    def unpause(self, dag_id: str) -> None:
        """Let the scheduler start runs of ``dag_id`` (and its Asset watchers start)."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        """Stop the scheduler from starting runs of ``dag_id`` (its Asset watchers stop too)."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})

    def assets(self, name_pattern: str) -> list[dict[str, Any]]:
        """The Assets whose name matches ``name_pattern`` (SQL LIKE), with their watchers."""
        query = urllib.parse.urlencode({"name_pattern": name_pattern})
        return self._request("GET", f"/api/v2/assets?{query}")["assets"]

    def asset_events(self, asset_id: int) -> list[dict[str, Any]]:
        """The events of one Asset (their ``extra`` carries a trigger's payload)."""
        return self._request("GET", f"/api/v2/assets/events?asset_id={asset_id}")["asset_events"]

    def connection(self, conn_id: str) -> dict[str, Any]:
        """A connection as the API server sees it (to check the settings file was loaded)."""
        return self._request("GET", f"/api/v2/connections/{urllib.parse.quote(conn_id, safe='')}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run as the UI's Trigger button does; returns its run id."""
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The latest runs of ``dag_id``, newest first."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after")[
            "dag_runs"
        ]

    def run_ids(self, dag_id: str) -> set[str]:
        """The ids of the latest runs (to tell a new run from known ones)."""
        return {r["dag_run_id"] for r in self.runs(dag_id)}

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run, with its state."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run, with its state."""
        quoted = urllib.parse.quote(run_id, safe="")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """A task's return value, or ``None`` when it has none (skipped, failed, not run)."""
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/return_value"
        try:
            return self._request("GET", f"{path}?map_index={map_index}&deserialize=true")["value"]
        except ApiError:
            return None

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
        """A task instance's extra links, by name, as the UI shows them."""
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/links"
        payload = self._request("GET", path)
        return payload.get("extra_links", payload) if isinstance(payload, dict) else {}

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """One task instance (one map index of a mapped task)."""
        suffix = f"/{map_index}" if map_index >= 0 else ""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}")

    def wait_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 600
    ) -> str:
        """Wait until a task instance reaches one of ``states``; returns the state it reached."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.task_instance(dag_id, run_id, task_id).get("state")
            if state in states:
                return state
            time.sleep(2)
        raise ApiError(f"{dag_id} {run_id} {task_id} is {state}, not {sorted(states)}, after {timeout:.0f}s")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, tail: int = 40) -> str:
        """The last lines of a task attempt's log (for messages when something went wrong)."""
        try:
            payload = self._request(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
                "?full_content=true",
            )
        except ApiError as exc:
            return f"(log not available: {exc})"
        lines = []
        for item in payload.get("content") or []:
            lines.append(item.get("event", "") if isinstance(item, dict) else str(item))
        return "\n".join(lines[-tail:])

    def event_logs(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The audit log of a run (state changes made by the scheduler, e.g. "state mismatch")."""
        query = urllib.parse.urlencode({"dag_id": dag_id, "run_id": run_id, "limit": 100})
        return self._request("GET", f"/api/v2/eventLogs?{query}")["event_logs"]

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """The human-in-the-loop request of a waiting task (subject, options, response)."""
        return self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
        )

    def respond(
        self, dag_id: str, run_id: str, task_id: str, option: str, map_index: int = -1
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop task as the logged-in user (what the UI's buttons do)."""
        return self._request(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            {"chosen_options": [option], "params_input": {}},
        )

    def mark_task(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """Mark a task instance ``failed`` / ``success`` / ``skipped`` as a user does in the UI; a running
        or deferred task is stopped (its ``on_kill``, or its trigger's, runs)."""
        quoted = urllib.parse.quote(run_id, safe="")
        self._request(
            "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}", {"new_state": state}
        )

    def clear_run(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """ "Clear" every task of a run so the scheduler runs them again (the UI's Clear button)."""
        body = {"dag_run_id": run_id, "dry_run": False, "only_failed": False, "reset_dag_runs": True}
        return self._request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)["task_instances"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """Wait until a run has finished (success or failed) and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            time.sleep(2)
        raise ApiError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")

    def wait_new_run(self, dag_id: str, known: set[str], timeout: float = 600) -> dict[str, Any]:
        """Wait for a run not in ``known`` (e.g. one started by an Asset event) to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [r for r in self.runs(dag_id) if r["dag_run_id"] not in known]
            if fresh:
                return self.wait_run(
                    dag_id, fresh[-1]["dag_run_id"], timeout=max(deadline - time.monotonic(), 1)
                )
            time.sleep(2)
        raise ApiError(f"no new {dag_id} run started within {timeout:.0f}s")
