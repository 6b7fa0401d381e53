"""The emulated Kubernetes cluster answers the real clients the way a cluster does.

The official ``kubernetes`` client, ``kubernetes_asyncio`` and the cncf-kubernetes provider's own
code paths (``KubernetesPodOperator`` sync and deferrable with its trigger, ``AsyncKubernetesHook``)
run pods against it: phases, exit codes, reasons, termination messages, logs (also followed while
the container runs), events, scheduling failures, image pull failures, deadlines, memory limits and
deletion that kills the processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
from typing import Any

import pytest

from tests.backends.kube import ApiFailure, KubeCluster

pytestmark = pytest.mark.backends

IMAGE = "python:3.11-emulated"
TERMINAL = ("Succeeded", "Failed")


@pytest.fixture(scope="module")
def cluster(kube_cluster: KubeCluster) -> KubeCluster:
    kube_cluster.register_image(IMAGE, env={"PYTHONUNBUFFERED": "1", "FROM_IMAGE": "image"}, workdir="/")
    return kube_cluster


@pytest.fixture(scope="module")
def v1(cluster: KubeCluster) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig_path)))


def pod_body(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "base", "image": IMAGE, "command": ["python", "-c", code]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "emulator-test"}},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def wait_phase(
    cluster: KubeCluster, namespace: str, name: str, phases: tuple[str, ...] = TERMINAL, timeout: float = 20
) -> dict[str, Any]:
    pod = cluster.wait_for_pod(
        namespace, name, lambda p: p is not None and p["status"]["phase"] in phases, timeout=timeout
    )
    assert pod is not None
    return pod


def base_status(pod: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in pod["status"]["containerStatuses"] if s["name"] == "base")


def group_members(groups: list[int]) -> list[int]:
    """Live (non-zombie) processes in these process groups."""
    import psutil

    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) in groups and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def reasons(cluster: KubeCluster, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in cluster.events(namespace, involved=name)]


# ---------------------------------------------------------------------------- official sync client
def test_a_pod_runs_to_success_with_its_logs_and_a_real_looking_status(cluster, v1, kube_namespace):
    created = v1.create_namespaced_pod(kube_namespace, pod_body("hi", "print('hi')"))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    assert created.status.phase == "Pending" and created.spec.service_account_name == "default"

    pod = wait_phase(cluster, kube_namespace, "hi")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = base_status(pod)["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["startedAt"] <= terminated["finishedAt"]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]} == {
        "PodReadyToStartContainers": "False",
        "Initialized": "True",
        "Ready": "False",
        "ContainersReady": "False",
        "PodScheduled": "True",
    }
    assert pod["spec"]["nodeName"] == cluster.node_name and pod["status"]["podIP"].startswith("10.244.")

    remote = v1.read_namespaced_pod("hi", kube_namespace)
    assert remote.status.container_statuses[0].state.terminated.exit_code == 0
    raw = v1.read_namespaced_pod_log(
        "hi", kube_namespace, container="base", timestamps=True, _preload_content=False
    )
    stamp, _, line = raw.data.decode().rstrip("\n").partition(" ")
    assert line == "hi"
    assert dt.datetime.fromisoformat(stamp[:26] + "+00:00").year >= 2024
    assert reasons(cluster, kube_namespace, "hi") == ["Scheduled", "Pulled", "Created", "Started"]


def test_a_non_zero_exit_fails_the_pod_with_the_termination_message(cluster, v1, kube_namespace):
    code = (
        "import os, sys\nprint('working'); print('Traceback: boom', file=sys.stderr)\n"
        "open(os.environ['MLOPS_TERMINATION_LOG'], 'w').write('bad data: column x is missing')\n"
        "sys.exit(3)"
    )
    v1.create_namespaced_pod(kube_namespace, pod_body("fails", code))
    plain = pod_body(
        "fallback",
        "import sys; print('last words'); sys.exit(2)",
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    v1.create_namespaced_pod(kube_namespace, plain)

    pod = wait_phase(cluster, kube_namespace, "fails")
    terminated = base_status(pod)["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed"
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert terminated["message"] == "bad data: column x is missing"
    assert "Traceback: boom" in cluster.logs(kube_namespace, "fails")

    terminated = base_status(wait_phase(cluster, kube_namespace, "fallback"))["state"]["terminated"]
    assert terminated["exitCode"] == 2 and terminated["message"] == "last words\n"


def test_an_unknown_image_stays_pending_in_image_pull_back_off(cluster, v1, kube_namespace):
    v1.create_namespaced_pod(
        kube_namespace, pod_body("pull", "print(1)", container={"image": "nope/missing:1"})
    )
    pod = cluster.wait_for_pod(
        kube_namespace,
        "pull",
        lambda p: (
            (base_status(p)["state"].get("waiting") or {}).get("reason") == "ImagePullBackOff"
            if p and p["status"].get("containerStatuses")
            else False
        ),
    )
    assert pod is not None and pod["status"]["phase"] == "Pending"
    assert base_status(pod)["state"]["waiting"]["message"] == 'Back-off pulling image "nope/missing:1"'
    events = cluster.events(kube_namespace, involved="pull")
    assert any(e["type"] == "Warning" and e["message"] == "Error: ErrImagePull" for e in events)
    assert any('Failed to pull image "nope/missing:1"' in e["message"] for e in events)
    with pytest.raises(Exception, match="waiting to start: trying and failing to pull image"):
        v1.read_namespaced_pod_log("pull", kube_namespace)

    cluster.register_image("nope/missing:1")  # pushed at last: the next pull attempt succeeds
    assert wait_phase(cluster, kube_namespace, "pull")["status"]["phase"] == "Succeeded"


def test_an_unschedulable_pod_stays_pending_until_the_node_fits(cluster, v1, kube_namespace):
    v1.create_namespaced_pod(kube_namespace, pod_body("picky", "print(1)", nodeSelector={"pool": "gpu"}))
    gpu = pod_body(
        "gpu",
        "print(1)",
        container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    )
    v1.create_namespaced_pod(kube_namespace, gpu)
    for name, why in (
        ("picky", "didn't match Pod's node affinity/selector"),
        ("gpu", "1 Insufficient nvidia.com/gpu"),
    ):
        pod = cluster.wait_for_pod(
            kube_namespace,
            name,
            lambda p: any(
                c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                for c in p["status"].get("conditions", [])
            ),
        )
        condition = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
        assert condition["status"] == "False" and why in condition["message"]
        assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
        failed = [
            e for e in cluster.events(kube_namespace, involved=name) if e["reason"] == "FailedScheduling"
        ]
        assert (
            failed
            and failed[0]["type"] == "Warning"
            and failed[0]["message"].startswith("0/1 nodes are available")
        )

    labels, capacity, taints = cluster.node_labels, cluster.node_capacity, cluster.node_taints
    try:
        cluster.node_taints = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
        cluster.node_labels = {**labels, "pool": "gpu"}
        cluster.node_capacity = {**capacity, "nvidia.com/gpu": "1"}
        assert wait_phase(cluster, kube_namespace, "gpu")["status"]["phase"] == "Succeeded"
        picky = cluster.wait_for_pod(
            kube_namespace,
            "picky",
            lambda p: any(
                "untolerated taint {dedicated: gpu}" in c.get("message", "")
                for c in p["status"].get("conditions", [])
            ),
        )
        assert picky["status"]["phase"] == "Pending"
        cluster.node_taints = []
        assert wait_phase(cluster, kube_namespace, "picky")["status"]["phase"] == "Succeeded"
    finally:
        cluster.node_labels, cluster.node_capacity, cluster.node_taints = labels, capacity, taints


def test_a_pod_waits_for_its_volume_claim(cluster, v1, kube_namespace, tmp_path):
    (tmp_path / "input.txt").write_text("from the volume")
    code = f"print(open({str(tmp_path / 'input.txt')!r}).read())"
    volume = {"name": "data", "persistentVolumeClaim": {"claimName": "mlops-data"}}
    mount = {"name": "data", "mountPath": str(tmp_path)}
    v1.create_namespaced_pod(
        kube_namespace, pod_body("claims", code, volumes=[volume], container={"volumeMounts": [mount]})
    )
    pod = cluster.wait_for_pod(
        kube_namespace, "claims", lambda p: "PodScheduled" in str(p["status"].get("conditions"))
    )
    assert pod["status"]["conditions"][0]["message"].startswith(
        '0/1 nodes are available: persistentvolumeclaim "mlops-data" not found.'
    )
    cluster.add_volume_claim(kube_namespace, "mlops-data")
    assert wait_phase(cluster, kube_namespace, "claims")["status"]["phase"] == "Succeeded"
    assert cluster.logs(kube_namespace, "claims") == "from the volume\n"


def test_deleting_a_pod_terminates_its_processes_and_the_pod_goes(cluster, v1, kube_namespace, tmp_path):
    marker = tmp_path / "got-sigterm"
    code = (
        "import signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').write('x'), sys.exit(0)))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)"
    )
    v1.create_namespaced_pod(kube_namespace, pod_body("victim", code))
    stubborn = pod_body(
        "stubborn",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)",
    )
    v1.create_namespaced_pod(kube_namespace, stubborn)
    for name in ("victim", "stubborn"):
        cluster.wait_for_pod(
            kube_namespace,
            name,
            lambda p: (
                p["status"]["phase"] == "Running"
                and "up" in cluster.logs(kube_namespace, p["metadata"]["name"])
            ),
        )
    pids = [p["pid"] for p in cluster.processes() if p["namespace"] == kube_namespace]
    assert len(pids) == 2

    v1.delete_namespaced_pod("victim", kube_namespace)
    started = time.monotonic()
    v1.delete_namespaced_pod("stubborn", kube_namespace, grace_period_seconds=1)
    for name in ("victim", "stubborn"):
        cluster.wait_for_pod(kube_namespace, name, lambda p: p is None, timeout=10)
    assert time.monotonic() - started >= 0.9  # the one ignoring SIGTERM got SIGKILL after its grace period
    assert marker.read_text() == "x"
    assert not [p for p in cluster.processes() if p["namespace"] == kube_namespace]
    deadline = time.monotonic() + 5
    while group_members(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_members(pids)  # the whole process groups are gone, the grandchild included
    assert cluster.pods(kube_namespace) == []
    ever = cluster.all_pods_ever(kube_namespace)
    assert sorted(p["metadata"]["name"] for p in ever) == ["stubborn", "victim"]
    assert all(p["metadata"].get("deletionTimestamp") for p in ever)


def test_a_container_over_its_memory_limit_is_oom_killed(cluster, v1, kube_namespace):
    code = "import time\nblob = bytearray(300 * 1024 * 1024)\nblob[::4096] = b'x' * len(blob[::4096])\ntime.sleep(30)"
    body = pod_body("hog", code, container={"resources": {"limits": {"memory": "128Mi"}}})
    v1.create_namespaced_pod(kube_namespace, body)
    pod = wait_phase(cluster, kube_namespace, "hog")
    terminated = base_status(pod)["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed" and pod["status"]["qosClass"] == "Burstable"
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


def test_the_active_deadline_stops_the_pod(cluster, v1, kube_namespace):
    v1.create_namespaced_pod(
        kube_namespace, pod_body("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1)
    )
    started = time.monotonic()
    pod = wait_phase(cluster, kube_namespace, "slow", timeout=15)
    assert time.monotonic() - started < 10
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert base_status(pod)["state"]["terminated"]["exitCode"] == 128 + signal.SIGTERM
    assert "DeadlineExceeded" in reasons(cluster, kube_namespace, "slow")


def test_followed_logs_stream_while_the_container_runs(cluster, v1, kube_namespace, tmp_path):
    go = tmp_path / "go"
    code = (
        f"import os, time\nprint('first', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "print('second', flush=True)"
    )
    v1.create_namespaced_pod(kube_namespace, pod_body("chatty", code))
    wait_phase(cluster, kube_namespace, "chatty", ("Running",))
    stream = v1.read_namespaced_pod_log(
        "chatty", kube_namespace, container="base", follow=True, _preload_content=False
    )
    chunks = stream.stream(amt=None)
    assert next(chunks) == b"first\n"
    assert cluster.pod(kube_namespace, "chatty")["status"]["phase"] == "Running"
    go.write_text("go")
    assert b"".join(chunks) == b"second\n"  # the stream ends when the container does
    assert wait_phase(cluster, kube_namespace, "chatty")["status"]["phase"] == "Succeeded"
    tail = v1.read_namespaced_pod_log("chatty", kube_namespace, tail_lines=1, _preload_content=False).data
    assert tail == b"second\n"


def test_environment_comes_from_the_image_the_spec_and_secrets(cluster, v1, kube_namespace):
    cluster.add_secret(kube_namespace, "creds", {"TOKEN": "s3cr3t", "USER": "ml"})
    code = (
        "import json, os\nkeys = ['FROM_IMAGE', 'TOKEN', 'USER', 'PASS', 'GREETING', 'POD', 'MLOPS_TERMINATION_LOG']\n"
        "print(json.dumps({k: os.environ.get(k) for k in keys} | {'cwd': os.getcwd()}))"
    )
    env = [
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
        {"name": "GREETING", "value": "hello $(USER)"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    body = pod_body("envy", code, container={"env": env, "envFrom": [{"secretRef": {"name": "creds"}}]})
    v1.create_namespaced_pod(kube_namespace, body)
    wait_phase(cluster, kube_namespace, "envy")
    seen = json.loads(cluster.logs(kube_namespace, "envy"))
    assert seen["FROM_IMAGE"] == "image" and seen["cwd"] == "/"
    assert (seen["TOKEN"], seen["USER"], seen["PASS"]) == ("s3cr3t", "ml", "s3cr3t")
    assert (seen["GREETING"], seen["POD"]) == ("hello ml", "envy")
    assert seen["MLOPS_TERMINATION_LOG"]

    missing = pod_body("nosecret", "print(1)", container={"envFrom": [{"secretRef": {"name": "absent"}}]})
    v1.create_namespaced_pod(kube_namespace, missing)
    pod = cluster.wait_for_pod(
        kube_namespace,
        "nosecret",
        lambda p: (
            (base_status(p)["state"].get("waiting") or {}).get("reason") == "CreateContainerConfigError"
            if p["status"].get("containerStatuses")
            else False
        ),
    )
    assert base_status(pod)["state"]["waiting"]["message"] == 'secret "absent" not found'


def test_the_api_refuses_what_a_real_apiserver_refuses(cluster, v1, kube_namespace):
    from kubernetes.client.rest import ApiException

    cases = [
        (pod_body("Bad_Name", "print(1)"), 422, "metadata.name: Invalid value"),
        (
            pod_body("noimage", "print(1)", container={"image": ""}),
            422,
            "spec.containers[0].image: Required value",
        ),
        (pod_body("sa", "print(1)", serviceAccountName="ghost"), 403, 'serviceaccount "ghost" not found'),
    ]
    for body, status, text in cases:
        with pytest.raises(ApiException) as caught:
            v1.create_namespaced_pod(kube_namespace, body)
        assert caught.value.status == status and text in json.loads(caught.value.body)["message"]
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod("no-such-namespace", pod_body("x", "print(1)"))
    assert caught.value.status == 404
    assert json.loads(caught.value.body)["message"] == 'namespaces "no-such-namespace" not found'
    v1.create_namespaced_pod(kube_namespace, pod_body("twice", "print(1)"))
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod(kube_namespace, pod_body("twice", "print(1)"))
    assert caught.value.status == 409
    with pytest.raises(ApiException) as caught:
        v1.read_namespaced_pod("ghost", kube_namespace)
    assert caught.value.status == 404 and caught.value.reason == "Not Found"
    with pytest.raises(ApiException) as caught:
        v1.patch_namespaced_pod("twice", kube_namespace, {"spec": {"restartPolicy": "Always"}})
    assert caught.value.status == 422
    assert "Forbidden: pod updates may not change fields" in json.loads(caught.value.body)["message"]


def test_selectors_patches_and_watches_behave_like_the_api(cluster, v1, kube_namespace):
    from kubernetes import watch

    # Before the pods exist: a pod may finish before a list made after its creation answers.
    since = v1.list_namespaced_pod(kube_namespace).metadata.resource_version
    for name, tier in (("one", "a"), ("two", "b"), ("three", "c")):
        body = pod_body(name, "print(1)")
        body["metadata"]["labels"] = {"tier": tier, "run": "r1"}
        v1.create_namespaced_pod(kube_namespace, body)

    def names(**kw: Any) -> list[str]:
        return sorted(p.metadata.name for p in v1.list_namespaced_pod(kube_namespace, **kw).items)

    assert names(label_selector="tier in (a,b),run=r1") == ["one", "two"]
    assert names(label_selector="tier notin (a),!checked") == ["three", "two"]
    v1.patch_namespaced_pod("two", kube_namespace, {"metadata": {"labels": {"checked": "True"}}})
    assert names(label_selector="run=r1,checked!=True,!airflow-worker") == ["one", "three"]
    for name in ("one", "two", "three"):
        wait_phase(cluster, kube_namespace, name)
    assert names(field_selector="status.phase=Succeeded,metadata.name!=one") == ["three", "two"]

    seen, watched = [], set()
    for event in watch.Watch().stream(
        v1.list_namespaced_pod,
        kube_namespace,
        label_selector="tier=a",
        resource_version=since,
        timeout_seconds=2,
    ):
        seen.append((event["type"], event["object"].status.phase))
        watched.add(event["object"].metadata.name)
        if event["object"].status.phase == "Succeeded":
            break
    assert seen[0][0] == "ADDED" and seen[-1] == ("MODIFIED", "Succeeded")
    assert {t for t, _ in seen[1:]} == {"MODIFIED"} and watched == {"one"}  # tier=a only
    pages = v1.list_namespaced_pod(kube_namespace, limit=2)
    assert len(pages.items) == 2 and pages.metadata.remaining_item_count == 1
    assert len(v1.list_namespaced_pod(kube_namespace, limit=2, _continue=pages.metadata._continue).items) == 1


def test_init_containers_restarts_and_previous_logs(cluster, v1, kube_namespace, tmp_path):
    first = tmp_path / "tried"
    flaky = (
        f"import os, sys\nif not os.path.exists({str(first)!r}):\n"
        f"    open({str(first)!r}, 'w').write('1'); print('first try fails'); sys.exit(1)\nprint('second try works')"
    )
    body = pod_body(
        "flaky",
        flaky,
        restartPolicy="OnFailure",
        initContainers=[{"name": "setup", "image": IMAGE, "command": ["python", "-c", "print('init')"]}],
    )
    body["spec"]["containers"].append(
        {"name": "side", "image": IMAGE, "command": ["python", "-c", "print('side')"]}
    )
    v1.create_namespaced_pod(kube_namespace, body)
    pod = wait_phase(cluster, kube_namespace, "flaky")
    status = base_status(pod)
    assert pod["status"]["phase"] == "Succeeded" and status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert cluster.logs(kube_namespace, "flaky", "setup") == "init\n"
    assert cluster.logs(kube_namespace, "flaky", "base") == "second try works\n"
    previous = v1.read_namespaced_pod_log(
        "flaky", kube_namespace, container="base", previous=True, _preload_content=False
    ).data
    assert previous == b"first try fails\n"
    with pytest.raises(
        ApiFailure,
        match="a container name must be specified for pod flaky, choose one of: "
        r"\[base side\] or one of the init containers: \[setup\]",
    ):
        cluster.logs(kube_namespace, "flaky")
    assert "BackOff" in reasons(cluster, kube_namespace, "flaky")


def test_every_object_served_validates_against_the_official_schema(cluster, v1, kube_namespace, tmp_path):
    import kubernetes_validate

    go = tmp_path / "go"
    running = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)"
    v1.create_namespaced_pod(kube_namespace, pod_body("running", running))
    v1.create_namespaced_pod(kube_namespace, pod_body("done", "import sys; sys.exit(4)"))
    v1.create_namespaced_pod(kube_namespace, pod_body("pull", "1", container={"image": "nope:2"}))
    v1.create_namespaced_pod(kube_namespace, pod_body("pending", "1", nodeSelector={"no": "node"}))
    cluster.add_secret(kube_namespace, "s", {"k": "v"})
    cluster.add_volume_claim(kube_namespace, "c")
    wait_phase(cluster, kube_namespace, "running", ("Running",))
    wait_phase(cluster, kube_namespace, "done")
    for name in ("pull", "pending"):
        cluster.wait_for_pod(kube_namespace, name, lambda p: len(p["status"].get("conditions") or []) > 0)
    served = [cluster.node(), cluster.request("GET", f"/api/v1/namespaces/{kube_namespace}")]
    for plural in ("pods", "events", "secrets", "persistentvolumeclaims", "serviceaccounts"):
        listing = cluster.request("GET", f"/api/v1/namespaces/{kube_namespace}/{plural}")
        kind = listing["kind"].removesuffix("List")
        served += [{"apiVersion": "v1", "kind": kind, **item} for item in listing["items"]]
    go.write_text("go")
    assert len(served) >= 12
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        for obj in served:
            kubernetes_validate.validate(obj, version, strict=True)


# ---------------------------------------------------------------------------- kubernetes_asyncio
def test_the_asyncio_client_sees_the_same_cluster(cluster, kube_namespace):
    from kubernetes_asyncio import client, config

    async def scenario() -> tuple[Any, Any, str, list[str]]:
        api_client = await config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        async with api_client:
            v1 = client.CoreV1Api(api_client)
            await v1.create_namespaced_pod(kube_namespace, pod_body("ok", "print('hi')"))
            await v1.create_namespaced_pod(kube_namespace, pod_body("three", "import sys; sys.exit(3)"))
            pods = {}
            for name in ("ok", "three"):
                while (
                    pod := await v1.read_namespaced_pod(name, kube_namespace)
                ).status.phase not in TERMINAL:
                    await asyncio.sleep(0.05)
                pods[name] = pod
            logs = await v1.read_namespaced_pod_log("ok", kube_namespace, container="base")
            events = await v1.list_namespaced_event(kube_namespace, field_selector="involvedObject.name=ok")
            return pods["ok"], pods["three"], logs, [e.reason for e in events.items]

    ok, three, logs, events = asyncio.run(scenario())
    assert ok.status.phase == "Succeeded" and ok.status.container_statuses[0].state.terminated.exit_code == 0
    assert logs == "hi\n" and events == ["Scheduled", "Pulled", "Created", "Started"]
    assert three.status.phase == "Failed"
    assert three.status.container_statuses[0].state.terminated.exit_code == 3


# ---------------------------------------------------------------------------- the provider's code paths
class TaskInstance:
    """What ``KubernetesPodOperator`` reads from the task context (labels, XCom of the pod's name)."""

    dag_id, task_id, map_index, try_number = "emulator_dag", "kpo", -1, 1

    def __init__(self) -> None:
        self.start_date = dt.datetime.now(dt.UTC)
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def kpo_context() -> dict[str, Any]:
    return {"ti": TaskInstance(), "run_id": f"manual__{time.time_ns()}", "dag": object()}


@pytest.fixture
def airflow_conn(cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in cluster.airflow_conn_env().items():
        monkeypatch.setenv(key, value)
    return "kubernetes_default"


def kpo(namespace: str, code: str, **kwargs: Any) -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return KubernetesPodOperator(
        task_id="kpo",
        name="kpo",
        namespace=namespace,
        image=IMAGE,
        cmds=["python", "-c", code],
        get_logs=True,
        on_finish_action="delete_pod",
        poll_interval=0.2,
        startup_check_interval_seconds=0.2,
        **kwargs,
    )


def test_kubernetes_pod_operator_sync_runs_logs_fails_and_cleans_up(
    cluster, kube_namespace, airflow_conn, capfd
):
    from airflow.providers.common.compat.sdk import AirflowException

    kpo(kube_namespace, "print('from the pod')", deferrable=False).execute(kpo_context())
    assert "[base] from the pod" in capfd.readouterr().out
    with pytest.raises(AirflowException, match="returned a failure") as caught:
        kpo(
            kube_namespace,
            "import sys; print('bad'); sys.exit(3)",
            deferrable=False,
            termination_message_policy="FallbackToLogsOnError",
        ).execute(kpo_context())
    assert "bad" in str(caught.value)
    assert cluster.pods(kube_namespace) == []
    assert len(cluster.all_pods_ever(kube_namespace)) == 2


def test_kubernetes_pod_operator_deferrable_through_its_trigger(cluster, kube_namespace, airflow_conn, capfd):
    from airflow.providers.common.compat.sdk import TaskDeferred

    operator = kpo(
        kube_namespace, "import time\nfor i in range(3): print('tick', i); time.sleep(0.2)", deferrable=True
    )
    context = kpo_context()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger = deferred.value.trigger
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("KubernetesPodTrigger") and kwargs["pod_namespace"] == kube_namespace

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger yielded nothing")

    event = asyncio.run(first_event())
    assert event["status"] == "success"
    operator.trigger_reentry(context, event)
    assert "[base] logs: tick 2" in capfd.readouterr().out
    assert cluster.pods(kube_namespace) == []


def test_kubernetes_pod_operator_fails_fast_on_a_missing_image(cluster, kube_namespace, airflow_conn):
    from airflow.providers.cncf.kubernetes.utils.pod_manager import PodLaunchFailedException
    from airflow.providers.common.compat.sdk import AirflowException

    operator = kpo(kube_namespace, "print(1)", deferrable=False)
    operator.image = "registry.example.com/not/pushed:1"
    started = time.monotonic()
    with pytest.raises(AirflowException, match="returned a failure") as caught:
        operator.execute(kpo_context())  # the launch failure, then the cleanup's "returned a failure"
    launch = caught.value.__context__
    assert isinstance(launch, PodLaunchFailedException)
    assert str(launch).startswith(
        "Image cannot be pulled, unable to start: ErrImagePull\nrpc error: code = NotFound"
    )
    assert time.monotonic() - started < 10
    assert cluster.pods(kube_namespace) == []


def test_the_async_hook_watches_events_of_a_pending_pod(cluster, v1, kube_namespace, airflow_conn):
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

    v1.create_namespaced_pod(kube_namespace, pod_body("stuck", "print(1)", nodeSelector={"no": "such-node"}))

    async def first_events() -> list[tuple[str, str]]:
        hook = AsyncKubernetesHook(conn_id=airflow_conn)
        seen = []
        async for event in hook.watch_pod_events("stuck", kube_namespace, timeout_seconds=2):
            seen.append((event.reason, event.type))
            if event.reason == "FailedScheduling":
                break
        return seen

    assert asyncio.run(asyncio.wait_for(first_events(), 15)) == [("FailedScheduling", "Warning")]


def test_the_async_hook_reads_pods_logs_and_events(cluster, v1, kube_namespace, airflow_conn):
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

    v1.create_namespaced_pod(kube_namespace, pod_body("hooked", "print('a'); print('b')"))
    wait_phase(cluster, kube_namespace, "hooked")

    async def scenario() -> tuple[Any, list[str], list[str]]:
        hook = AsyncKubernetesHook(conn_id=airflow_conn)
        pod = await hook.get_pod("hooked", kube_namespace)
        lines = await hook.read_logs("hooked", kube_namespace, container_name="base", since_seconds=60)
        events = await hook.get_pod_events("hooked", kube_namespace)
        await hook.delete_pod("hooked", kube_namespace)
        return pod, lines, [e.reason for e in events.items]

    pod, lines, events = asyncio.run(scenario())
    assert pod.status.phase == "Succeeded"
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "b"]
    assert events[0] == "Scheduled"
    cluster.wait_for_pod(kube_namespace, "hooked", lambda p: p is None, timeout=5)


# ---------------------------------------------------------------------------- standalone process
def test_the_standalone_emulator_process_serves_the_same_api(kube_cluster_process):
    cluster = kube_cluster_process
    cluster.register_project_image()
    namespace = cluster.new_namespace()
    body = pod_body("proj", "import include.mlops.remote as r; print(r.EXIT_TRANSIENT)")
    body["spec"]["containers"][0]["image"] = "airflow-mlops:test"
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    pod = wait_phase(cluster, namespace, "proj")
    assert pod["status"]["phase"] == "Succeeded", cluster.logs(namespace, "proj")
    assert cluster.logs(namespace, "proj") == "75\n"
    with pytest.raises(ApiFailure) as caught:
        cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/ghost")
    assert caught.value.status == 404

    cluster.reset()
    assert cluster.pods() == [] and cluster.all_pods_ever() == []
    assert namespace not in [
        n["metadata"]["name"] for n in cluster.request("GET", "/api/v1/namespaces")["items"]
    ]


# ---------------------------------------------------------------------------- the emulator's parts
def test_selector_patch_and_quantity_semantics_match_kubernetes():
    from tests.backends.kube.objects import Invalid, quantity
    from tests.backends.kube.patching import apply_patch
    from tests.backends.kube.selectors import field_matcher, label_matcher

    pod = {
        "metadata": {"name": "p", "labels": {"tier": "a", "env": "prod"}},
        "status": {"phase": "Running"},
        "spec": {"containers": [{"name": "base", "image": "x:1", "env": [{"name": "A", "value": "1"}]}]},
    }
    assert label_matcher("tier in (a, b), env!=dev, !gone")(pod)
    assert not label_matcher("tier notin (a),env")(pod) and not label_matcher("gone")(pod)
    assert field_matcher("pods", "status.phase=Running,metadata.name!=q")(pod)
    with pytest.raises(Invalid, match=r"field label not supported: spec\.image"):
        field_matcher("pods", "spec.image=x")
    patched = apply_patch(
        pod,
        {
            "metadata": {"labels": {"env": None, "new": "1"}},
            "spec": {"containers": [{"name": "base", "env": [{"name": "B", "value": "2"}]}]},
        },
        "application/strategic-merge-patch+json",
    )
    assert patched["metadata"]["labels"] == {"tier": "a", "new": "1"}
    assert [e["name"] for e in patched["spec"]["containers"][0]["env"]] == ["A", "B"]
    assert patched["spec"]["containers"][0]["image"] == "x:1"
    merged = apply_patch(pod, {"spec": {"containers": [{"name": "other"}]}}, "application/merge-patch+json")
    assert merged["spec"]["containers"] == [{"name": "other"}]  # a plain merge patch replaces lists
    ops = [
        {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"},
        {"op": "remove", "path": "/metadata/labels/tier"},
    ]
    assert apply_patch(pod, ops, "application/json-patch+json")["metadata"]["labels"] == {
        "env": "prod",
        "x/y": "z",
    }
    assert [quantity(q) for q in ("500m", "2", "1Gi", "128974848", "129e6", "1.5G")] == [
        quantity("0.5"),
        2,
        2**30,
        128974848,
        129000000,
        1_500_000_000,
    ]
