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
    pass


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
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
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self._request("GET", "/api/v2/dags?limit=1000")["dags"]]

    def import_errors(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/v2/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
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
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after")[
            "dag_runs"
        ]

    def run_ids(self, dag_id: str) -> set[str]:
        return {r["dag_run_id"] for r in self.runs(dag_id)}

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.parse.quote(run_id, safe="")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/return_value"
        try:
            return self._request("GET", f"{path}?map_index={map_index}&deserialize=true")["value"]
        except ApiError:
            return None

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/links"
        payload = self._request("GET", path)
        return payload.get("extra_links", payload) if isinstance(payload, dict) else {}

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        suffix = f"/{map_index}" if map_index >= 0 else ""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}")

    def wait_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 600
    ) -> str:
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

    def clear_run(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """ "Clear" every task of a run so the scheduler runs them again (the UI's Clear button)."""
        body = {"dag_run_id": run_id, "dry_run": False, "only_failed": False, "reset_dag_runs": True}
        return self._request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)["task_instances"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
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
