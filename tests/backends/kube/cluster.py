"""``KubeCluster``: the test's handle on an emulated cluster, in this process or in another one.

Everything goes over HTTP (the Kubernetes API plus the emulator's ``/_emulator/`` side door), so
the same handle works for a cluster served by a thread of the pytest process (``in_thread``) and
for a standalone ``python -m tests.backends.kube`` process (``in_process``, or ``connect`` to one
that is already running). It writes a kubeconfig pointing at the server (no auth) and hands out
the Airflow connection for the cncf-kubernetes provider.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.backends.kube.emulator import NODE_NAME, EmulatorThread
from tests.backends.kube.images import Image

ROOT = Path(__file__).resolve().parents[3]
PROJECT_IMAGE = "airflow-mlops:test"


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig with one cluster/context/user for ``url`` and no credentials."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-emulator", "cluster": {"server": url}}],
        "users": [{"name": "kube-emulator", "user": {}}],
        "contexts": [
            {
                "name": "kube-emulator",
                "context": {"cluster": "kube-emulator", "user": "kube-emulator", "namespace": namespace},
            }
        ],
        "current-context": "kube-emulator",
        "preferences": {},
    }
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    return path


class ApiFailure(RuntimeError):
    """The emulator answered a helper's request with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"kube emulator answered {status}: {message}")
        self.status, self.body = status, body


class KubeCluster:
    """A running emulated cluster and the helpers tests use on it."""

    def __init__(self, url: str, *, workdir: Path, stop: Callable[[], None] | None = None) -> None:
        self.url = url.rstrip("/")
        self.node_name = NODE_NAME
        self._workdir = workdir
        self._stop = stop
        self.kubeconfig_path = write_kubeconfig(workdir / "kubeconfig", self.url)

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def in_thread(cls, port: int = 0) -> KubeCluster:
        """Serve the cluster from a thread of this process (HTTP on 127.0.0.1; any process can reach it)."""
        server = EmulatorThread("127.0.0.1", port)
        url = server.start()
        return cls(url, workdir=Path(tempfile.mkdtemp(prefix="kube-cluster-")), stop=server.stop)

    @classmethod
    def in_process(cls, port: int = 0, *, timeout: float = 60) -> KubeCluster:
        """Serve the cluster from a separate ``python -m tests.backends.kube`` process."""
        workdir = Path(tempfile.mkdtemp(prefix="kube-cluster-"))
        ready = workdir / "ready.json"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.backends.kube", "--port", str(port), "--ready-file", str(ready)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the kube emulator process did not start (exit code {process.poll()})")
            time.sleep(0.05)
        url = json.loads(ready.read_text(encoding="utf-8"))["url"]

        def stop() -> None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

        return cls(url, workdir=workdir, stop=stop)

    @classmethod
    def connect(cls, url: str) -> KubeCluster:
        """A handle on an emulator someone else runs (``close`` leaves it running)."""
        return cls(url, workdir=Path(tempfile.mkdtemp(prefix="kube-cluster-")))

    def close(self) -> None:
        """Stop the emulator if this handle started it (every pod process is killed); drop the kubeconfig."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        shutil.rmtree(self._workdir, ignore_errors=True)

    # ----------------------------------------------------------------- raw HTTP
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
    ) -> Any:
        """One API call; JSON in and out, an ``ApiFailure`` for an error status."""
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode("utf-8", "replace")
            raise ApiFailure(exc.code, payload) from None
        if resp.headers.get_content_type() == "application/json":
            return json.loads(raw) if raw else None
        return raw.decode("utf-8", "replace")

    # ----------------------------------------------------------------- connections
    def airflow_connection(self) -> dict[str, Any]:
        """The cncf-kubernetes connection (JSON form) that reaches this cluster."""
        return {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(self.kubeconfig_path), "in_cluster": False},
        }

    def airflow_conn_env(self, conn_id: str = "kubernetes_default") -> dict[str, str]:
        """``{"AIRFLOW_CONN_<ID>": json}`` for an Airflow process's environment."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.airflow_connection())}

    # ----------------------------------------------------------------- images, namespaces, secrets
    def register_image(
        self,
        name: str,
        *,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        entrypoint: list[str] | None = None,
        cmd: list[str] | None = None,
    ) -> None:
        """Make ``name`` pullable; its containers run with this environment and working directory."""
        image = Image(name, dict(env or {}), workdir, entrypoint, cmd)
        self.request("POST", "/_emulator/images", image.to_json())

    def register_project_image(self, name: str = PROJECT_IMAGE, *, env: dict[str, str] | None = None) -> str:
        """Register the project's image: this checkout as WORKDIR and on PYTHONPATH, unbuffered Python."""
        base = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        self.register_image(name, env={**base, **(env or {})}, workdir=str(ROOT))
        return name

    def add_namespace(self, name: str) -> str:
        """Create a namespace (with its ``default`` service account) unless it exists."""
        try:
            self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        except ApiFailure as exc:
            if exc.status != 409:
                raise
        return name

    def new_namespace(self, prefix: str = "test") -> str:
        """A fresh, uniquely named namespace."""
        return self.add_namespace(f"{prefix}-{uuid.uuid4().hex[:8]}")

    def add_service_account(self, namespace: str, name: str) -> None:
        """Create a service account (pods naming a missing one are refused, as in a real cluster)."""
        self.add_namespace(namespace)
        body = {"metadata": {"name": name}}
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body)
        except ApiFailure as exc:
            if exc.status != 409:
                raise

    def add_volume_claim(self, namespace: str, name: str, *, storage: str = "1Gi") -> None:
        """Create a Bound PersistentVolumeClaim (a pod naming a missing claim is unschedulable).

        The test kubelet mounts nothing: a container sees a volume's ``mountPath`` only if that path
        exists on this host, so tests mount the claim at the host folder that holds the data.
        """
        self.add_namespace(namespace)
        body = {"metadata": {"name": name}, "spec": {"resources": {"requests": {"storage": storage}}}}
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", body)
        except ApiFailure as exc:
            if exc.status != 409:
                raise

    def add_secret(self, namespace: str, name: str, data: dict[str, str], *, type: str = "Opaque") -> None:
        """Create or replace a secret (values given in clear; the namespace is created if missing)."""
        self.add_namespace(namespace)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        body = {"metadata": {"name": name, "namespace": namespace}, "data": encoded, "type": type}
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body)
        except ApiFailure as exc:
            if exc.status != 409:
                raise
            self.request("PUT", f"/api/v1/namespaces/{namespace}/secrets/{name}", body)

    # ----------------------------------------------------------------- what happened
    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live pods (all namespaces by default)."""
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        return list(self.request("GET", path)["items"])

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One live pod, or None."""
        try:
            return dict(self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}"))
        except ApiFailure as exc:
            if exc.status == 404:
                return None
            raise

    def all_pods_ever(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every pod ever created (last known state; deleted ones included), for "no pod left behind"."""
        return list(
            self.request("GET", "/_emulator/pods-ever", query={"namespace": namespace} if namespace else None)
        )

    def events(self, namespace: str | None = None, *, involved: str | None = None) -> list[dict[str, Any]]:
        """Events (optionally about one object, by name)."""
        path = f"/api/v1/namespaces/{namespace}/events" if namespace else "/api/v1/events"
        query = {"fieldSelector": f"involvedObject.name={involved}"} if involved else None
        return list(self.request("GET", path, query=query)["items"])

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """A pod container's log so far."""
        query = {"container": container} if container else None
        return str(self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log", query=query))

    def processes(self) -> list[dict[str, Any]]:
        """The container processes alive right now (namespace, pod, container, pid)."""
        return list(self.request("GET", "/_emulator/processes"))

    def reset(self) -> None:
        """Back to a fresh cluster (user namespaces deleted, pods killed, node restored)."""
        self.request("POST", "/_emulator/reset")

    def wait_for_pod(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        *,
        timeout: float = 30,
    ) -> dict[str, Any] | None:
        """Poll a pod until ``predicate(pod)`` holds (the pod is None once gone); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.pod(namespace, name)
            if predicate(pod):
                return pod
            if time.monotonic() > deadline:
                phase = (pod or {}).get("status", {}).get("phase")
                raise AssertionError(
                    f"pod {namespace}/{name} did not reach the expected state in {timeout}s (phase {phase})"
                )
            time.sleep(0.05)

    # ----------------------------------------------------------------- the node
    def node(self) -> dict[str, Any]:
        """The node object."""
        return dict(self.request("GET", f"/api/v1/nodes/{self.node_name}"))

    def _set_node(self, change: Callable[[dict[str, Any]], None], *, status: bool = False) -> None:
        node = self.node()
        change(node)
        self.request("PUT", f"/api/v1/nodes/{self.node_name}{'/status' if status else ''}", node)

    @property
    def node_labels(self) -> dict[str, str]:
        """The node's labels (assign to replace them)."""
        return dict(self.node()["metadata"].get("labels") or {})

    @node_labels.setter
    def node_labels(self, labels: dict[str, str]) -> None:
        self._set_node(lambda node: node["metadata"].__setitem__("labels", dict(labels)))

    @property
    def node_taints(self) -> list[dict[str, str]]:
        """The node's taints, e.g. ``[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]``."""
        return list(self.node()["spec"].get("taints") or [])

    @node_taints.setter
    def node_taints(self, taints: list[dict[str, str]]) -> None:
        self._set_node(lambda node: node["spec"].__setitem__("taints", list(taints)))

    @property
    def node_capacity(self) -> dict[str, str]:
        """The node's capacity (= allocatable), e.g. ``{"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}``.

        Assigning replaces it (``pods`` stays 110 unless given).
        """
        return dict(self.node()["status"]["capacity"])

    @node_capacity.setter
    def node_capacity(self, capacity: dict[str, str]) -> None:
        def change(node: dict[str, Any]) -> None:
            node["status"]["capacity"] = {"pods": "110", **capacity}
            node["status"]["allocatable"] = {"pods": "110", **capacity}

        self._set_node(change, status=True)
