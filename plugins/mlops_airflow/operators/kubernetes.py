"""Run a remote stage (``train``, ``score-partition``) in a Kubernetes pod with the provider's KubernetesPodOperator.

``KubernetesStageOperator`` turns the spec's ``kubernetes:`` section into the cncf-kubernetes provider's
own ``KubernetesPodOperator`` (built inside ``submit``, by composition) and runs it: the project image
running ``python -m include.mlops <stage>``, requests and limits, node selector, tolerations, pull
secrets, env from secrets, the data volume, labels naming the task instance, an active deadline and
the provider's schedule and start-up timeouts. The pod writes its result record
(``include.mlops.remote``) to the pipeline's state area; the task reads it back when the pod ends,
never through the XCom sidecar (deferrable KPO loses XCom: apache/airflow #73117, #72821).

Cheap to import: the kubernetes client and the provider's modules are imported when the task runs.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, cast

from airflow.sdk import Context, conf

from include.mlops.backend_spec import KubernetesBackend
from include.mlops.remote import EXIT_DETERMINISTIC, EXIT_TRANSIENT, read_record
from mlops_airflow.exceptions import PipelineFailed, PipelineRetryable
from mlops_airflow.operators.remote import RemoteStageOperator

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import V1Pod


MANAGED_BY = {"app.kubernetes.io/managed-by": "airflow-mlops"}
DATA_VOLUME = "mlops-data"
# Room for the provider's random 9-character suffix ("-" + 8) in a 63-character pod name.
POD_NAME_LENGTH = 63 - 9
# Waiting reasons of a container whose image cannot be pulled (the provider fails fast on them
# unless the registry's message says the error is transient, e.g. rate limited).
IMAGE_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# API statuses that the same request would get again: a forbidden namespace, an invalid pod, ...
_REFUSED = {400, 401, 403, 404, 409, 422}
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def one_line(text: object, limit: int = 400) -> str:
    """``text`` squeezed onto one line, at most ``limit`` characters (the end is kept: it says most)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else "…" + flat[-(limit - 1) :]


def base_container(pod: V1Pod | None, name: str = "base") -> Any:
    """The status of the pod's stage container, ``None`` while it has none."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    return next((status for status in statuses if status.name == name), None)


@cache
def _pod_callbacks() -> type:
    """The provider callback that logs the pod's name as soon as it exists (before any waiting)."""
    from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback

    class AnnouncePod(KubernetesPodOperatorCallback):
        """Log ``namespace/name`` of the pod the task runs, so a person can find it while it waits."""

        @staticmethod
        def on_pod_creation(*, operator: KubernetesPodOperator, **kwargs: Any) -> None:
            pod = operator.pod
            if pod is not None:
                operator.log.info(
                    "The stage runs in pod %s/%s (kubectl -n %s logs -f %s)",
                    pod.metadata.namespace,
                    pod.metadata.name,
                    pod.metadata.namespace,
                    pod.metadata.name,
                )

    return AnnouncePod


class KubernetesStageOperator(RemoteStageOperator):
    """Run ``python -m include.mlops <stage>`` in a pod with the provider's ``KubernetesPodOperator``.

    The pod is deleted when it ends, whatever the outcome (``on_finish_action="delete_pod"``), and when
    the task is killed: ``on_kill`` deletes it while the task waits in the worker, and the provider's
    ``KubernetesPodTrigger.on_kill`` (called by the triggerer on Airflow 3.3+ when a user marks a
    deferred task failed or clears it) deletes it while the task is deferred. (Airflow cancels only
    a trigger the triggerer already runs: a task killed in the second between deferring and being
    picked up leaves its pod to finish alone, bounded by ``active_deadline``; clearing the task
    again finds and deletes it.) Its name is logged and
    kept on the inner operator (``pod_operator.pod``) before any waiting; the provider pushes it to
    XCom as ``pod_name`` / ``pod_namespace`` as well. A retry first reuses a succeeded result record,
    then reattaches to a pod of the same task instance that still runs (``durable``), and only then
    creates one. When the task ends, any pod of its task instance still there (the provider's delete
    failed, or an earlier try's pod whose record the retry reused) is deleted (``sweep``). The job's logs are in the task log (``get_logs``); the pod's events are logged
    when it fails.

    Deferrable by default (Airflow's ``[operators] default_deferrable``): the provider's
    ``KubernetesPodTrigger`` waits in the triggerer, and the task resumes in ``trigger_reentry``,
    which rebuilds the provider's operator and forwards to it.

    When the pod fails, the result record wins (the job's own one-line error and whether to retry).
    Without a record, the pod's final state gives one line and the decision:

    - exit code 2 (deterministic: bad data, failed gate): fails without retry; 75 (transient) and
      any other exit code: retried;
    - ``OOMKilled`` and ``DeadlineExceeded`` (``kubernetes.active_deadline``): fail without retry, the
      same pod would be stopped again; the message says which limit to raise;
    - image pull errors (``ErrImagePull``, ``ImagePullBackOff``, ``InvalidImageName``): fail without
      retry (the provider already keeps waiting on registry errors it knows to be transient, such as
      rate limits); fix ``kubernetes.image`` or ``kubernetes.image_pull_secrets``;
    - unschedulable after ``kubernetes.schedule_timeout``: retried, since capacity may appear (a
      cluster autoscaler, other jobs ending); the message quotes the scheduler's reason;
    - the Kubernetes API refusing the pod (invalid, forbidden, unknown namespace): fails without
      retry; an unreachable API is retried.
    """

    backend: ClassVar[str] = "kubernetes"
    ui_color = "#e3ecfa"

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 2,
        **kwargs: Any,
    ) -> None:
        """Only store the values; the pod is built from the spec when the task runs."""
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.pod_runner: KubernetesPodOperator | None = None

    # The pod ------------------------------------------------------------------------------------------
    @property
    def kubernetes(self) -> KubernetesBackend:
        """The spec's ``kubernetes:`` section for this stage."""
        return cast(KubernetesBackend, self.section)  # ``section`` checked that the backend is kubernetes

    def pod_labels(self, context: Context) -> dict[str, str]:
        """The section's labels, then those naming the task instance (they win: cleanup selects on them)."""
        for key, value in self.kubernetes.labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise PipelineFailed(
                    f"pipeline {self.pipeline}: kubernetes.labels {key}: {value!r} is not a Kubernetes label; "
                    "use letters, digits, '-', '_' and '.' (at most 63, an optional DNS prefix in the key)"
                )
        return {
            **self.kubernetes.labels,
            **self.lineage_of(context).labels(),
            "airflow-mlops/pipeline": self.pipeline,
            "airflow-mlops/stage": self.stage,
            **MANAGED_BY,
        }

    def template_file(self) -> str | None:
        """The section's pod template file, resolved against the project root; it must exist."""
        from include.mlops.paths import resolve_project_path

        if self.kubernetes.pod_template_file is None:
            return None
        path = resolve_project_path(self.kubernetes.pod_template_file)
        if not path.is_file():
            raise PipelineFailed(
                f"pipeline {self.pipeline}: kubernetes.pod_template_file {path} does not exist on the worker; "
                "ship it with the project (paths are relative to the project root)"
            )
        return str(path)

    def pod_options(self) -> dict[str, Any]:
        """The section's scheduling and container options as the provider's keyword arguments."""
        from kubernetes.client import models as k8s

        section = self.kubernetes
        options: dict[str, Any] = {
            "namespace": section.namespace,
            "image": section.image,
            "image_pull_policy": section.image_pull_policy,
            "service_account_name": section.service_account,
            "node_selector": dict(section.node_selector),
            "annotations": dict(section.annotations),
            "image_pull_secrets": [
                k8s.V1LocalObjectReference(name=name) for name in section.image_pull_secrets
            ],
            "env_from": [
                k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=name))
                for name in section.env_from_secrets
            ],
            "tolerations": [
                k8s.V1Toleration(**toleration.model_dump()) for toleration in section.tolerations
            ],
            "container_resources": None,
            "active_deadline_seconds": section.active_deadline,
            "startup_timeout_seconds": section.startup_timeout,
            "schedule_timeout_seconds": section.schedule_timeout,
            "pod_template_file": self.template_file(),
        }
        if section.resources.requests or section.resources.limits:
            options["container_resources"] = k8s.V1ResourceRequirements(
                requests=dict(section.resources.requests) or None,
                limits=dict(section.resources.limits) or None,
            )
        if section.data_volume is not None:
            claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=section.data_volume.claim_name)
            options["volumes"] = [k8s.V1Volume(name=DATA_VOLUME, persistent_volume_claim=claim)]
            options["volume_mounts"] = [
                k8s.V1VolumeMount(name=DATA_VOLUME, mount_path=section.data_volume.mount_path)
            ]
        return options

    def pod_operator(self, context: Context) -> KubernetesPodOperator:
        """The provider's ``KubernetesPodOperator`` for this task instance (built, not run)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

        lineage = self.lineage_of(context)
        return KubernetesPodOperator(
            task_id=self.task_id,
            kubernetes_conn_id=self.kubernetes.kubernetes_conn_id,
            name=lineage.job_name(self.pipeline, self.stage, max_length=POD_NAME_LENGTH),
            random_name_suffix=True,
            cmds=self.job_command(),
            arguments=self.job_args(context),
            # The section's env comes last: e.g. the in-cluster URL of the MLflow server.
            env_vars={**self.job_env(), **self.kubernetes.env},
            labels=self.pod_labels(context),
            **self.pod_options(),
            # The last lines of the log become the termination message when the job wrote none.
            termination_message_policy="FallbackToLogsOnError",
            on_finish_action="delete_pod",
            on_kill_action="delete_pod",
            get_logs=True,
            log_events_on_failure=True,
            log_pod_spec_on_failure=False,
            durable=True,  # reattach to a pod of this task instance that still runs (was reattach_on_restart)
            do_xcom_push=False,  # results come back through the result record, never the sidecar
            deferrable=self.deferrable,
            poll_interval=self.poll_interval,
            startup_check_interval_seconds=max(1, round(self.poll_interval)),
            callbacks=_pod_callbacks(),
        )

    # Running and resuming -----------------------------------------------------------------------------
    def submit(self, context: Context) -> Any:
        """Create the pod (or reattach to this task instance's) and wait for it, here or deferred.

        ``execute_sync`` / ``execute_async`` are what the provider's ``execute`` dispatches to; calling
        them (not ``execute``) keeps Airflow's ExecutorSafeguard from warning about a nested operator.
        """
        pod_operator = self.pod_runner = self.pod_operator(context)
        wait = pod_operator.execute_async if self.deferrable else pod_operator.execute_sync
        return self.settle(context, pod_operator, lambda: wait(context))

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after ``KubernetesPodTrigger``'s event: the provider's re-entry, then the result record."""
        pod_operator = self.pod_runner = self.pod_operator(context)
        return self.settle(context, pod_operator, lambda: pod_operator.trigger_reentry(context, event))

    def settle(self, context: Context, pod_operator: KubernetesPodOperator, wait: Callable[[], Any]) -> Any:
        """Run the provider's step; when the pod has ended, turn its outcome into the task's."""
        from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config import ConfigException
        from urllib3.exceptions import HTTPError

        try:
            wait()  # raises TaskDeferred (a BaseException) when the provider defers: it passes through
        except AirflowNotFoundException:
            raise PipelineFailed(
                f"pipeline {self.pipeline}: the Kubernetes connection {self.kubernetes.kubernetes_conn_id!r} "
                "(kubernetes.kubernetes_conn_id) is not defined; add it (kube_config_path, kube_config or in_cluster)"
            ) from None
        except ConfigException as exc:
            raise PipelineFailed(
                f"pipeline {self.pipeline}: no Kubernetes configuration for connection "
                f"{self.kubernetes.kubernetes_conn_id!r}: {one_line(exc)}; set kube_config_path, kube_config "
                "or in_cluster on it"
            ) from None
        except ApiException as exc:
            raise self.refused(exc) from None
        except HTTPError as exc:
            raise PipelineRetryable(
                f"pipeline {self.pipeline}: cannot reach the Kubernetes API of connection "
                f"{self.kubernetes.kubernetes_conn_id!r}: {one_line(exc)}"
            ) from exc
        except AirflowException as exc:
            try:
                return self.failed(context, pod_operator, exc)
            finally:
                self.sweep(context, pod_operator)
        self.sweep(context, pod_operator)
        return self.collect(context)

    def sweep(self, context: Context, pod_operator: KubernetesPodOperator | None = None) -> None:
        """Delete every pod of this task instance still there, whichever try made it: none outlives the task.

        The provider deletes the pod it waited for but only logs when that fails (an API hiccup), and a
        retry that reuses a finished job's record never sees the pod of the try that ran it.
        """
        from airflow.sdk.exceptions import AirflowException
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config import ConfigException
        from urllib3.exceptions import HTTPError

        namespace = self.kubernetes.namespace
        selector = ",".join(f"{key}={value}" for key, value in self.lineage_of(context).labels().items())
        try:
            runner = pod_operator or self.pod_operator(context)
            for pod in runner.client.list_namespaced_pod(namespace, label_selector=selector).items:
                if pod.metadata.deletion_timestamp is None:
                    self.log.info("Deleting pod %s/%s of this task instance", namespace, pod.metadata.name)
                    runner.pod_manager.delete_pod(pod)
        except (ApiException, HTTPError, ConfigException, AirflowException) as exc:
            self.log.warning(
                "Could not check that no pod of this task is left (%s); see kubectl -n %s get pods -l %s",
                one_line(exc),
                namespace,
                selector,
            )

    def refused(self, exc: Any) -> Exception:
        """The Kubernetes API answered with an error: refused requests fail, outages are retried."""
        import json

        try:
            detail = json.loads(exc.body).get("message") or exc.reason
        except (TypeError, ValueError, AttributeError):
            detail = exc.reason
        message = (
            f"pipeline {self.pipeline}: the Kubernetes API answered {exc.status} {exc.reason} for the pod in "
            f"namespace {self.kubernetes.namespace}: {one_line(detail)}"
        )
        return PipelineFailed(message) if exc.status in _REFUSED else PipelineRetryable(message)

    def failed(self, context: Context, pod_operator: KubernetesPodOperator, exc: BaseException) -> Any:
        """The pod failed or never ran: the result record if the job wrote one, else one line from the pod."""
        pod = pod_operator.remote_pod if pod_operator.remote_pod is not None else pod_operator.pod
        reason, deterministic = self.explain(pod, exc, pod_operator)
        where = f"pod {self.kubernetes.namespace}/{pod.metadata.name}" if pod is not None else "the pod"
        if deterministic and read_record(self.record_uri(context)) is None:
            raise PipelineFailed(
                f"pipeline {self.pipeline}: {self.stage} on kubernetes failed: {where} {reason}"
            )
        return self.collect(context, job_error=f"{where} {reason}")

    def on_kill(self) -> None:
        """Delete the pod this try waits for (the provider's trigger does it while the task is deferred)."""
        if self.pod_runner is not None:
            self.pod_runner.on_kill()

    # Why a pod failed -----------------------------------------------------------------------------------
    def explain(
        self, pod: V1Pod | None, exc: BaseException, pod_operator: KubernetesPodOperator
    ) -> tuple[str, bool]:
        """One line saying why the pod failed, and whether the failure is deterministic (no retry)."""
        from_state = self.from_pod_state(
            pod, lambda: self.last_warning(pod_operator, mentioning=self.kubernetes.image)
        )
        if from_state is not None:
            return from_state
        return self.from_exception(exc, self.last_warning(pod_operator))

    def from_pod_state(self, pod: V1Pod | None, warning: Callable[[], str | None]) -> tuple[str, bool] | None:
        """What the pod's final state says (deadline, exit code, OOM, image, scheduling), if anything;
        ``warning`` reads the pod's latest Warning event, for a state that names no cause."""
        if pod is None or pod.status is None:
            return None
        section = self.kubernetes
        if pod.status.reason == "DeadlineExceeded":
            return (
                f"ran longer than kubernetes.active_deadline ({section.active_deadline} s) and was stopped "
                "(DeadlineExceeded); raise active_deadline or give the job more resources",
                True,
            )
        status = base_container(pod)
        state = status.state if status is not None else None
        if state is not None and state.terminated is not None:
            return self.from_exit(state.terminated)
        if state is not None and state.waiting is not None and state.waiting.reason in IMAGE_ERRORS:
            return self.image_error(state.waiting.reason, state.waiting.message, warning), True
        unscheduled = next(
            (c for c in pod.status.conditions or [] if c.type == "PodScheduled" and c.status == "False"), None
        )
        if unscheduled is not None:
            return self.unschedulable(unscheduled.message or unscheduled.reason), False
        return None

    def from_exit(self, terminated: Any) -> tuple[str, bool]:
        """The container ended: its exit code, and its termination message (the job's last words)."""
        code, reason = terminated.exit_code, terminated.reason or "Error"
        if reason == "OOMKilled":
            limit = self.kubernetes.resources.limits.get("memory")
            return (
                f"was OOMKilled (exit code {code}): the job needed more memory than "
                f"{'its limit ' + limit if limit else 'the node could give it'}; raise "
                "kubernetes.resources.limits.memory (and requests.memory)",
                True,
            )
        said = one_line(terminated.message)
        line = f"exited with code {code} ({reason}){': ' + said if said else ''}"
        if code == EXIT_TRANSIENT:
            return line, False
        return line, code == EXIT_DETERMINISTIC

    def image_error(
        self, reason: str, message: str | None, warning: Callable[[], str | None] | None = None
    ) -> str:
        """One line for an image that cannot be pulled. The runtime's message names the image several
        times; what follows its last mention says why (not found, 401 Unauthorized, ...). A back-off
        message says nothing of the cause: the pull's Warning event does."""
        image = self.kubernetes.image

        def cause(text: str | None) -> str:
            text = text or ""
            return text.rsplit(image, 1)[-1].lstrip('": ') if image in text else text

        detail = cause(message)
        if not detail and warning is not None:
            detail = cause(warning())
        return (
            f"cannot pull image {image} ({reason}: {one_line(detail, 200) or 'no detail'}); "
            "check kubernetes.image and kubernetes.image_pull_secrets"
        )

    def unschedulable(self, why: str | None) -> str:
        """One line for a pod no node accepted within the schedule timeout."""
        return (
            f"was not scheduled within kubernetes.schedule_timeout ({self.kubernetes.schedule_timeout} s): "
            f"{one_line(why, 250) or 'no node accepted it'}; check kubernetes.resources, node_selector and "
            "tolerations against the cluster's nodes"
        )

    def from_exception(self, exc: BaseException, warning: str | None) -> tuple[str, bool]:
        """What the provider's exceptions say when the pod's state did not (it never started)."""
        from airflow.providers.cncf.kubernetes.utils.pod_manager import (
            PodLaunchFailedException,
            PodLaunchTimeoutException,
        )

        chain: list[BaseException] = []
        current: BaseException | None = exc
        while current is not None and len(chain) < 10:
            chain.append(current)
            current = current.__cause__ or current.__context__
        for error in chain:
            text = str(error.args[0]) if error.args else str(error)
            if isinstance(error, PodLaunchTimeoutException) and "scheduled" in text:
                return self.unschedulable(warning), False
            if isinstance(error, PodLaunchTimeoutException):
                return (
                    f"did not start within kubernetes.startup_timeout ({self.kubernetes.startup_timeout} s)"
                    f"{': ' + warning if warning else ''}",
                    False,
                )
            if isinstance(error, PodLaunchFailedException) and "Image cannot be pulled" in text:
                reason = next((r for r in IMAGE_ERRORS if r in text), "ErrImagePull")
                return self.image_error(reason, text.split("\n", 1)[-1] or warning), True
        first = str(exc).strip().splitlines()
        return f"failed: {one_line(first[0] if first else type(exc).__name__)}", False

    def last_warning(self, pod_operator: KubernetesPodOperator, *, mentioning: str = "") -> str | None:
        """The pod's latest Warning event (FailedScheduling, Failed, ...) whose message mentions
        ``mentioning``: events outlive the pod."""
        pod = pod_operator.pod
        if pod is None:
            return None
        try:
            events = pod_operator.pod_manager.read_pod_events(pod).items or []
        except Exception as exc:  # best effort: the provider's error is reported either way
            self.log.info("Could not read the events of pod %s: %s", pod.metadata.name, exc)
            return None
        warnings = [e for e in events if e.type == "Warning" and mentioning in (e.message or "")]
        return one_line(f"{warnings[-1].reason}: {warnings[-1].message}", 250) if warnings else None
