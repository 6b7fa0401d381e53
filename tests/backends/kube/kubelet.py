"""The test kubelet (and scheduler) of the emulator's one node: every created pod runs as local processes.

A pod goes the way it goes on a real node: scheduled against the node (selector, affinity, taints,
capacity; else ``PodScheduled=False/Unschedulable`` and a ``FailedScheduling`` event, retried
while it stays Pending), its images pulled from the emulator's registry (an unknown image waits in
``ErrImagePull`` / ``ImagePullBackOff``), its configuration resolved (a missing secret waits in
``CreateContainerConfigError``), its init containers run in order, then its containers run as
local processes (phase ``Running``), and the pod ends ``Succeeded`` or ``Failed`` with each
container's exit code, reason (``Completed``, ``Error``, ``OOMKilled``) and termination message.
``activeDeadlineSeconds`` stops the pod (``Failed``/``DeadlineExceeded``); a memory limit is
enforced by polling the process tree's resident memory (``OOMKilled``, exit code 137); deleting a
pod sends SIGTERM to each container's process group and SIGKILL after the grace period, and the
pod object goes away when its processes are gone. Restart policies ``OnFailure`` and ``Always``
restart containers with a (shortened) CrashLoopBackOff.

Not emulated: volumes are not mounted (a PersistentVolumeClaim must exist for the pod to be
scheduled, and a container sees a ``mountPath`` only if that path exists on this host), CPU limits
are not enforced (requests count for scheduling), probes are ignored, and ``exec`` / ``attach`` /
``port-forward`` are not served (so no XCom sidecar and no istio proxy, which the project never uses).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.backends.kube.environment import ConfigError, command_line, container_env, executable, working_dir
from tests.backends.kube.images import Image, Registry, normalize, valid_reference
from tests.backends.kube.objects import ApiError, quantity, rfc3339
from tests.backends.kube.runtime import (
    ContainerRuntime,
    PodRuntime,
    Run,
    kill_group,
    resident_memory,
    signal_group,
)
from tests.backends.kube.scheduling import claim_problem, failed_scheduling, unfit_reasons
from tests.backends.kube.store import Store

TERMINAL = ("Succeeded", "Failed")
CONDITION_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
SCHEDULE_RETRY = 0.25  # seconds between scheduling attempts of a pending pod
ERR_IMAGE_PULL_FOR = 0.3  # how long ErrImagePull shows before ImagePullBackOff
MAX_BACK_OFF = 5.0  # real kubelets back off up to 5 minutes; tests do not wait that long
MEMORY_POLL = 0.05
START_FAILED = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: "


class EventRecorder:
    """Writes core/v1 Events about pods, aggregating repeats into ``count`` like the real recorder."""

    def __init__(self, store: Store, host: str) -> None:
        self.store, self.host = store, host
        self._names: dict[tuple[Any, ...], str] = {}

    def record(
        self,
        pod: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "kubelet",
        field_path: str | None = None,
    ) -> None:
        """Record (or count again) an event about ``pod``."""
        meta = pod["metadata"]
        key = (meta["uid"], reason, message, component, field_path)
        existing = self.store.get("events", meta["namespace"], self._names.get(key, ""))
        stamp = rfc3339()
        if existing is not None:
            existing["count"] = int(existing.get("count") or 1) + 1
            existing["lastTimestamp"] = stamp
            self.store.replace("events", existing)
            return
        involved = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        host = self.host if component == "kubelet" else None
        event = {
            "metadata": {"name": self._name(meta), "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": "Warning" if warning else "Normal",
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        self._names[key] = self.store.create("events", event)["metadata"]["name"]

    def _name(self, meta: dict[str, Any]) -> str:
        """``<object>.<hex nanoseconds>`` like the real recorder: events list in the order they happened."""
        stamp = time.time_ns()
        while self.store.get("events", meta["namespace"], f"{meta['name']}.{stamp:x}") is not None:
            stamp += 1
        return f"{meta['name']}.{stamp:x}"


class Kubelet:
    """Schedules and runs the pods of the emulator's node."""

    def __init__(self, store: Store, registry: Registry, *, node_name: str, api_port: int) -> None:
        self.store, self.registry, self.node_name, self.api_port = store, registry, node_name, api_port
        self.events = EventRecorder(store, node_name)
        self.pods: dict[str, PodRuntime] = {}
        self._root = Path(tempfile.mkdtemp(prefix="kube-emulator-"))
        self._next_ip = 2
        self._tasks: set[asyncio.Task[Any]] = set()

    # ----------------------------------------------------------------- the API server's calls
    def admit(self, pod: dict[str, Any]) -> None:
        """Take a newly created pod: schedule it and run it in the background."""
        meta = pod["metadata"]
        root = Path(tempfile.mkdtemp(prefix=f"{meta['namespace']}-{meta['name']}-"[:60], dir=self._root))
        runtime = PodRuntime(meta["uid"], meta["namespace"], meta["name"], root, f"10.244.0.{self._next_ip}")
        self._next_ip = self._next_ip % 250 + 1
        spec = pod["spec"]
        for init, key in ((True, "initContainers"), (False, "containers")):
            for container in spec.get(key) or []:
                log = root / f"{container['name']}.termination-log"
                runtime.containers[container["name"]] = ContainerRuntime(container, init, log)
        self.pods[runtime.uid] = runtime
        runtime.task = asyncio.get_running_loop().create_task(self._lifecycle(runtime))

    def delete(self, pod: dict[str, Any], grace: int) -> bool:
        """Stop a deleted pod; True when its object can go now, False when it goes once its processes exit."""
        runtime = self.pods.get(pod["metadata"]["uid"])
        if runtime is None:
            return True
        if grace > 0 and runtime.processes():
            runtime.stop("delete")
            self._terminate(runtime, grace)
            return False
        runtime.stop("delete")
        self._kill_all(runtime)
        if runtime.task is not None:
            runtime.task.cancel()
        self._forget(runtime)
        return True

    def log_run(self, pod: dict[str, Any], container: str | None, previous: bool) -> Run:
        """The run whose log ``GET .../log`` serves, or the apiserver's 400 saying why there is none."""
        name, spec = pod["metadata"]["name"], pod["spec"]
        names = [c["name"] for c in spec.get("containers") or []]
        inits = [c["name"] for c in spec.get("initContainers") or []]
        if not container:
            if len(names) != 1:
                more = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]{more}",
                )
            container = names[0]
        if container not in names + inits:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        runtime = self.pods.get(pod["metadata"]["uid"])
        state = runtime.containers[container] if runtime else None
        runs = state.runs if state else []
        if previous:
            if len(runs) < 2:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            return runs[-2]
        if not runs:
            waiting = (state.state.get("waiting") or {}).get("reason") if state else None
            why = (
                "trying and failing to pull image"
                if waiting in ("ErrImagePull", "ImagePullBackOff")
                else waiting or "ContainerCreating"
            )
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {why}'
            )
        return runs[-1]

    def processes(self) -> list[dict[str, Any]]:
        """The container processes alive right now."""
        return [
            {"namespace": r.namespace, "pod": r.name, "container": c.name, "pid": p.pid}
            for r in self.pods.values()
            for c in r.containers.values()
            if (p := c.live_process()) is not None
        ]

    async def shutdown(self) -> None:
        """Kill every container process and stop every lifecycle (the emulator is going away)."""
        tasks = []
        for runtime in list(self.pods.values()):
            runtime.stop("delete")
            self._kill_all(runtime)
            if runtime.task is not None:
                runtime.task.cancel()
                tasks.append(runtime.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        shutil.rmtree(self._root, ignore_errors=True)

    # ----------------------------------------------------------------- pod lifecycle
    async def _lifecycle(self, rt: PodRuntime) -> None:
        try:
            if await self._schedule(rt):
                self._start(rt)
                deadline = self._arm_deadline(rt)
                try:
                    if await self._run_inits(rt):
                        await asyncio.gather(*(self._run_container(rt, c) for c in rt.main()))
                finally:  # also when the lifecycle is cancelled (pod deleted, emulator shut down)
                    if deadline is not None:
                        deadline.cancel()
                self._settle(rt)
        except asyncio.CancelledError:
            self._kill_all(rt)
            raise
        except Exception as exc:  # an emulator bug: visible in the pod and on stderr, never silent
            traceback.print_exc()
            rt.phase, rt.reason, rt.message = "Failed", "EmulatorError", f"kube emulator bug: {exc!r}"
            self._publish(rt)
        finally:
            if rt.stopping == "delete":
                self._forget(rt)

    def _pod(self, rt: PodRuntime) -> dict[str, Any] | None:
        return self.store.get("pods", rt.namespace, rt.name) if rt.uid in self.pods else None

    def _publish(self, rt: PodRuntime) -> None:
        """Write the pod's status as the kubelet sees it."""
        pod = self._pod(rt)
        if pod is None or pod["metadata"]["uid"] != rt.uid:
            return
        if rt.start_time:
            self._refresh_conditions(rt)
        status: dict[str, Any] = {
            "phase": rt.phase,
            "conditions": [rt.conditions[k] for k in CONDITION_ORDER if k in rt.conditions],
            "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
        }
        if rt.reason:
            status["reason"] = rt.reason
        if rt.message:
            status["message"] = rt.message
        if rt.start_time:
            status |= {
                "startTime": rt.start_time,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": rt.pod_ip,
                "podIPs": [{"ip": rt.pod_ip}],
                "containerStatuses": [c.status() for c in rt.main()],
            }
            if rt.inits():
                status["initContainerStatuses"] = [c.status() for c in rt.inits()]
        pod["status"] = status
        self.store.replace("pods", pod)

    def _refresh_conditions(self, rt: PodRuntime) -> None:
        done = rt.phase in TERMINAL
        finished = "PodCompleted" if rt.phase == "Succeeded" else "PodFailed"
        rt.condition("PodReadyToStartContainers", not done)
        pending = [c.name for c in rt.inits() if c.exit_code() != 0]
        if pending and not done:
            rt.condition(
                "Initialized",
                False,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending)}]",
            )
        else:
            rt.condition("Initialized", True, "PodCompleted" if done and rt.inits() else None)
        unready = [c.name for c in rt.main() if not c.ready]
        for kind in ("Ready", "ContainersReady"):
            if done:
                rt.condition(kind, False, finished)
            elif unready:
                rt.condition(
                    kind,
                    False,
                    "ContainersNotReady",
                    f"containers with unready status: [{' '.join(unready)}]",
                )
            else:
                rt.condition(kind, True)

    async def _schedule(self, rt: PodRuntime) -> bool:
        last = None
        while rt.stopping is None:
            pod = self._pod(rt)
            if pod is None:
                return False
            if pod["spec"].get("nodeName") == self.node_name:
                rt.condition("PodScheduled", True)
                return True
            fits, message = self._verdict(rt, pod)
            if fits:
                self._bind(rt, pod)
                return True
            if message and message != last:
                rt.condition("PodScheduled", False, "Unschedulable", message)
                self._publish(rt)
                self.events.record(
                    pod, "FailedScheduling", message, warning=True, component="default-scheduler"
                )
                last = message
            await rt.pause(SCHEDULE_RETRY)
        return False

    def _verdict(self, rt: PodRuntime, pod: dict[str, Any]) -> tuple[bool, str | None]:
        """Whether the pod fits the node now, else the FailedScheduling message (None: no scheduler says a thing)."""
        node = self.store.get("nodes", None, self.node_name)
        if node is None or pod["spec"].get("nodeName"):
            return False, None  # bound to a node that is not this one: it waits there forever
        claims = claim_problem(
            pod["spec"], lambda name: self.store.get("persistentvolumeclaims", rt.namespace, name)
        )
        if claims:
            return False, claims
        reasons = unfit_reasons(pod["spec"], node, self._bound_pods(rt))
        return (not reasons), (failed_scheduling(reasons) if reasons else None)

    def _bound_pods(self, rt: PodRuntime) -> list[dict[str, Any]]:
        return [
            p
            for p in self.store.items("pods")
            if p["spec"].get("nodeName") == self.node_name
            and (p.get("status") or {}).get("phase") not in TERMINAL
            and p["metadata"]["uid"] != rt.uid
        ]

    def _bind(self, rt: PodRuntime, pod: dict[str, Any]) -> None:
        pod["spec"]["nodeName"] = self.node_name
        rt.condition("PodScheduled", True)
        pod["status"]["conditions"] = [rt.conditions["PodScheduled"]]
        self.store.replace("pods", pod)
        self.events.record(
            pod,
            "Scheduled",
            f"Successfully assigned {rt.namespace}/{rt.name} to {self.node_name}",
            component="default-scheduler",
        )

    def _start(self, rt: PodRuntime) -> None:
        rt.start_time = rfc3339()
        first = "PodInitializing" if rt.inits() else "ContainerCreating"
        for container in rt.containers.values():
            container.state = {"waiting": {"reason": first if not container.init else "PodInitializing"}}
        self._publish(rt)

    def _arm_deadline(self, rt: PodRuntime) -> asyncio.Task[None] | None:
        pod = self._pod(rt)
        seconds = (pod or {}).get("spec", {}).get("activeDeadlineSeconds")
        if not seconds:
            return None
        return asyncio.get_running_loop().create_task(self._deadline(rt, float(seconds)))

    async def _deadline(self, rt: PodRuntime, seconds: float) -> None:
        await asyncio.sleep(seconds)
        pod = self._pod(rt)
        if pod is None or rt.stopping is not None or rt.phase in TERMINAL:
            return
        rt.stop("deadline")
        self.events.record(
            pod, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
        )
        self._terminate(rt, int(pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def _settle(self, rt: PodRuntime) -> None:
        if rt.stopping == "delete" or (rt.phase in TERMINAL and rt.stopping is None):
            return
        if rt.stopping == "deadline":
            rt.phase, rt.reason = "Failed", "DeadlineExceeded"
            rt.message = "Pod was active on the node longer than the specified deadline"
        else:
            codes = [c.exit_code() for c in rt.containers.values()]
            rt.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        for container in rt.containers.values():
            container.ready = container.started = False
        self._publish(rt)

    def _terminate(self, rt: PodRuntime, grace: int) -> None:
        pod = self._pod(rt)
        for container in rt.containers.values():
            process = container.live_process()
            if process is None:
                continue
            if pod is not None:
                self.events.record(
                    pod,
                    "Killing",
                    f"Stopping container {container.name}",
                    field_path=self._field_path(container),
                )
            signal_group(process, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        task = asyncio.get_running_loop().create_task(self._escalate(rt, grace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _escalate(self, rt: PodRuntime, grace: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while rt.processes() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._kill_all(rt)

    @staticmethod
    def _kill_all(rt: PodRuntime) -> None:
        for process in rt.processes():
            kill_group(process)

    def _forget(self, rt: PodRuntime) -> None:
        if self.pods.pop(rt.uid, None) is None:
            return
        pod = self.store.get("pods", rt.namespace, rt.name)
        if pod is not None and pod["metadata"]["uid"] == rt.uid:
            self.store.remove("pods", rt.namespace, rt.name)
        shutil.rmtree(rt.root, ignore_errors=True)

    # ----------------------------------------------------------------- containers
    @staticmethod
    def _field_path(container: ContainerRuntime) -> str:
        return f"spec.{'initContainers' if container.init else 'containers'}{{{container.name}}}"

    def _event(
        self, rt: PodRuntime, container: ContainerRuntime, reason: str, message: str, *, warning: bool = False
    ) -> None:
        pod = self._pod(rt)
        if pod is not None:
            self.events.record(pod, reason, message, warning=warning, field_path=self._field_path(container))

    def _wait(
        self, rt: PodRuntime, container: ContainerRuntime, reason: str, message: str | None = None
    ) -> None:
        waiting = {"reason": reason, **({"message": message} if message else {})}
        if container.state != {"waiting": waiting}:
            container.state = {"waiting": waiting}
            self._publish(rt)

    async def _run_inits(self, rt: PodRuntime) -> bool:
        for container in rt.inits():
            code = await self._run_container(rt, container)
            if rt.stopping is not None or code != 0:
                return False
        return True

    async def _run_container(self, rt: PodRuntime, container: ContainerRuntime) -> int | None:
        image = await self._pull(rt, container)
        code = None
        while image is not None and rt.stopping is None:
            env = await self._configure(rt, container, image)
            if env is None:
                break
            code = await self._execute(rt, container, image, env)
            if not self._should_restart(rt, container, code) or not await self._back_off(rt, container):
                break
        return code

    def _should_restart(self, rt: PodRuntime, container: ContainerRuntime, code: int) -> bool:
        pod = self._pod(rt)
        policy = (pod or {}).get("spec", {}).get("restartPolicy", "Always")
        if rt.stopping is not None or pod is None or policy == "Never":
            return False
        return code != 0 or (policy == "Always" and not container.init)

    async def _back_off(self, rt: PodRuntime, container: ContainerRuntime) -> bool:
        delay = min(0.5 * 2**container.restarts, MAX_BACK_OFF)
        container.last_state = container.state
        self._wait(
            rt,
            container,
            "CrashLoopBackOff",
            f"back-off {int(delay)}s restarting failed container={container.name} pod={rt.name}_{rt.namespace}({rt.uid})",
        )
        self._event(
            rt,
            container,
            "BackOff",
            f"Back-off restarting failed container {container.name} in pod {rt.name}_{rt.namespace}({rt.uid})",
            warning=True,
        )
        if not await rt.pause(delay):
            return False
        container.restarts += 1
        return True

    async def _pull(self, rt: PodRuntime, container: ContainerRuntime) -> Image | None:
        reference = str(container.spec["image"])
        policy = container.spec.get("imagePullPolicy", "IfNotPresent")
        delay = 1.0
        while rt.stopping is None:
            image = self.registry.lookup(reference) if valid_reference(reference) else None
            if image is not None:
                self._announce_pull(rt, container, reference, policy)
                return image
            if not valid_reference(reference) or policy == "Never":
                self._refuse_image(rt, container, reference)
                if not await rt.pause(1.0):
                    break
                continue
            if not await self._fail_pull(rt, container, reference, delay):
                break
            delay = min(delay * 2, MAX_BACK_OFF)
        return None

    def _announce_pull(
        self, rt: PodRuntime, container: ContainerRuntime, reference: str, policy: str
    ) -> None:
        if policy == "Always":
            self._event(rt, container, "Pulling", f'Pulling image "{reference}"')
            self._event(
                rt,
                container,
                "Pulled",
                f'Successfully pulled image "{reference}" in 4ms (4ms including waiting). Image size: 1048576 bytes.',
            )
        else:
            self._event(rt, container, "Pulled", f'Container image "{reference}" already present on machine')

    def _refuse_image(self, rt: PodRuntime, container: ContainerRuntime, reference: str) -> None:
        if not valid_reference(reference):
            reason = "InvalidImageName"
            message = f'Failed to apply default image tag "{reference}": couldn\'t parse image name "{reference}": invalid reference format'
        else:
            reason, message = (
                "ErrImageNeverPull",
                f'Container image "{reference}" is not present with pull policy of Never',
            )
        if (container.state.get("waiting") or {}).get("reason") != reason:
            self._event(
                rt,
                container,
                reason if reason == "ErrImageNeverPull" else "InspectFailed",
                message,
                warning=True,
            )
            self._event(rt, container, "Failed", f"Error: {reason}", warning=True)
        self._wait(rt, container, reason, message)

    async def _fail_pull(
        self, rt: PodRuntime, container: ContainerRuntime, reference: str, delay: float
    ) -> bool:
        full = normalize(reference)
        detail = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{full}": failed to '
            f'resolve reference "{full}": {full}: not found'
        )
        self._event(rt, container, "Pulling", f'Pulling image "{reference}"')
        self._event(rt, container, "Failed", f'Failed to pull image "{reference}": {detail}', warning=True)
        self._event(rt, container, "Failed", "Error: ErrImagePull", warning=True)
        self._wait(rt, container, "ErrImagePull", detail)
        if not await rt.pause(ERR_IMAGE_PULL_FOR):
            return False
        self._event(rt, container, "BackOff", f'Back-off pulling image "{reference}"')
        self._event(rt, container, "Failed", "Error: ImagePullBackOff", warning=True)
        self._wait(rt, container, "ImagePullBackOff", f'Back-off pulling image "{reference}"')
        return await rt.pause(delay)

    async def _configure(
        self, rt: PodRuntime, container: ContainerRuntime, image: Image
    ) -> dict[str, str] | None:
        while rt.stopping is None:
            pod = self._pod(rt)
            node = self.store.get("nodes", None, self.node_name) or {}
            if pod is None:
                return None
            context = {
                "pod": pod,
                "container": container.spec,
                "namespace": rt.namespace,
                "allocatable": (node.get("status") or {}).get("allocatable") or {},
            }
            extra = {
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(self.api_port),
                "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.api_port}",
                "MLOPS_TERMINATION_LOG": str(container.termination_log),
            }
            try:
                env = container_env(image, context, self.store.get, extra)
            except ConfigError as exc:
                if (container.state.get("waiting") or {}).get("message") != str(exc):
                    self._event(rt, container, "Failed", f"Error: {exc}", warning=True)
                self._wait(rt, container, "CreateContainerConfigError", str(exc))
                await rt.pause(1.0)
                continue
            env.setdefault("HOME", str(rt.root / "home"))
            return env
        return None

    async def _execute(
        self, rt: PodRuntime, container: ContainerRuntime, image: Image, env: dict[str, str]
    ) -> int:
        argv = command_line(container.spec, image, env)
        run = Run()
        container.runs.append(run)
        container.oom = False
        container.termination_log.write_bytes(b"")
        container.container_id = f"containerd://{secrets.token_hex(32)}"
        container.image_id = image.image_id()
        self._event(rt, container, "Created", f"Created container: {container.name}")
        try:
            if not argv:
                raise FileNotFoundError("no command specified")
            run.process = await asyncio.create_subprocess_exec(
                executable(argv[0], env),
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=working_dir(container.spec, image, rt.root),
                start_new_session=True,
                limit=1 << 20,
            )
        except OSError:
            return self._start_failed(rt, container, run, argv)
        return await self._supervise(rt, container, run)

    def _start_failed(self, rt: PodRuntime, container: ContainerRuntime, run: Run, argv: list[str]) -> int:
        what = f'exec: "{argv[0]}": executable file not found in $PATH' if argv else "no command specified"
        message = f"{START_FAILED}{what}: unknown"
        stamp = rfc3339()
        run.finish()
        container.state = {
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": stamp,
                "finishedAt": stamp,
                "containerID": container.container_id,
            }
        }
        self._event(rt, container, "Failed", f"Error: {message}", warning=True)
        self._publish(rt)
        return 128

    async def _supervise(self, rt: PodRuntime, container: ContainerRuntime, run: Run) -> int:
        process = run.process
        assert process is not None and process.stdout is not None and process.stderr is not None
        started = rfc3339()
        container.state = {"running": {"startedAt": started}}
        container.ready = container.started = True
        if not container.init:
            rt.phase = "Running"
        self._event(rt, container, "Started", f"Started container {container.name}")
        self._publish(rt)
        pumps = [asyncio.create_task(self._pump(stream, run)) for stream in (process.stdout, process.stderr)]
        guard = self._guard_memory(container, process)
        returncode = await process.wait()
        kill_group(process)  # the runtime takes the container's other processes down with it
        await asyncio.wait(pumps, timeout=5)
        for task in (*pumps, *([guard] if guard else [])):
            task.cancel()
        run.finish()
        code = returncode if returncode >= 0 else 128 - returncode
        reason = "OOMKilled" if container.oom else "Completed" if code == 0 else "Error"
        terminated = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": rfc3339(),
            "containerID": container.container_id,
        }
        message = container.termination_message(code)
        if message:
            terminated["message"] = message
        container.state = {"terminated": terminated}
        container.ready = container.started = False
        self._settle_if_done(rt)
        self._publish(rt)
        return code

    def _settle_if_done(self, rt: PodRuntime) -> None:
        """Set the final phase in the same status update as the last container's exit (as the kubelet does)."""
        pod = self._pod(rt)
        policy = (pod or {}).get("spec", {}).get("restartPolicy", "Always")
        codes = [c.exit_code() for c in rt.main()]
        if rt.stopping is not None or None in codes or policy == "Always":
            return
        if policy == "OnFailure" and any(code != 0 for code in codes):
            return
        rt.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, run: Run) -> None:
        while True:
            try:
                line = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    run.append(exc.partial)
                return
            except asyncio.LimitOverrunError as exc:
                line = await stream.readexactly(exc.consumed)
            run.append(line)

    def _guard_memory(
        self, container: ContainerRuntime, process: asyncio.subprocess.Process
    ) -> asyncio.Task[None] | None:
        limit = ((container.spec.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None:
            return None
        return asyncio.get_running_loop().create_task(
            self._watch_memory(container, process, int(quantity(limit)))
        )

    @staticmethod
    async def _watch_memory(
        container: ContainerRuntime, process: asyncio.subprocess.Process, limit: int
    ) -> None:
        while process.returncode is None:
            if resident_memory(process.pid) > limit:
                container.oom = True
                kill_group(process)
                return
            await asyncio.sleep(MEMORY_POLL)
