"""Vertex AI's job service, GCS and MLflow on 127.0.0.1, for the Vertex backend's tests.

``FakeVertex`` serves ``google.cloud.aiplatform.v1.JobService`` (create, get, list and cancel custom
jobs) over gRPC on a free port, with the real request and response protobuf types of
google-cloud-aiplatform as its (de)serialisers. The provider's ``CustomJobHook`` and
``CustomJobAsyncHook`` hand out the *real* ``JobServiceClient`` / ``JobServiceAsyncClient`` with an
insecure channel to it (``install``): that is the only thing patched, so the hook's request building,
the client's marshalling, the hook's polling loop and the provider's trigger all really run. Each
create request is checked the way Vertex checks it (parent, primary pool of one replica, image,
machine, accelerators, labels, output directory) and round-tripped through ``CustomJob.serialize``.

A created job goes QUEUED -> RUNNING -> SUCCEEDED / FAILED: the fake "pulls" the image (a known
``Image``: working directory and environment of the project image), then runs the container's
command and args as a local subprocess with Vertex's variables (``AIP_MODEL_DIR`` =
``<base_output_directory>/model/``, ``CLOUD_ML_JOB_ID``, ``CLOUD_ML_PROJECT_ID``, ``CLUSTER_SPEC``,
...), the platform's environment (the emulator settings that stand in for workload identity) and
the container's ``env``. A non-zero exit fails the job with Vertex's message and the entry point's
last line of error output. ``hold()`` keeps new jobs QUEUED until ``release()``.

``gcs_emulator`` starts gcp-storage-emulator (plus the ``moveTo`` call gcsfs commits writes with) and
``tools.mlflow_server.MlflowServer`` a real ``mlflow server``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.cloud.aiplatform_v1 import (
    CancelCustomJobRequest,
    CreateCustomJobRequest,
    CustomJob,
    GetCustomJobRequest,
    JobServiceAsyncClient,
    JobServiceClient,
    JobState,
    ListCustomJobsRequest,
    ListCustomJobsResponse,
)
from google.cloud.aiplatform_v1.services.job_service.transports import (
    JobServiceGrpcAsyncIOTransport,
    JobServiceGrpcTransport,
)
from google.protobuf import empty_pb2
from google.rpc import status_pb2

from tools.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "google.cloud.aiplatform.v1.JobService"
PROJECT, REGION = "mlops-test-project", "europe-west4"
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_MACHINE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9]+(-[a-z0-9]+)*$")
_FILTER_TERM = re.compile(r'^\s*(display_name|state|labels\.[a-z0-9_-]+)\s*=\s*"([^"]*)"\s*$')


@dataclass(frozen=True)
class Image:
    """What a container image gives its job: a working directory and an environment."""

    workdir: Path
    env: dict[str, str]


def project_image(pipelines_dir: Path, home: Path) -> Image:
    """The project image: this checkout, its virtualenv's ``python`` first on PATH, the specs baked in."""
    venv_bin = Path(sys.executable).parent
    return Image(
        workdir=ROOT,
        env={
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "HOME": str(home),
            "MLOPS_PIPELINES_DIR": str(pipelines_dir),
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "LANG": "C.UTF-8",
        },
    )


@dataclass
class Run:
    """One job the fake runs: its state, its process, what it printed."""

    job: CustomJob
    process: subprocess.Popen[str] | None = None
    output: str = ""
    states: list[str] = field(default_factory=list)
    cancelled: bool = False


class FakeVertex:
    """Vertex AI's JobService for one project and region, over gRPC on 127.0.0.1."""

    def __init__(self, *, images: dict[str, Image], platform_env: dict[str, str]) -> None:
        self.images = images
        self.platform_env = platform_env
        self.project, self.region = PROJECT, REGION
        self.requests: list[CreateCustomJobRequest] = []  # every create, as Vertex received it
        self.calls: list[str] = []  # every method called, in order
        self.runs: dict[str, Run] = {}
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._queue_open = threading.Event()
        self._queue_open.set()
        self._server: grpc.Server | None = None
        self.address = ""

    # Server ---------------------------------------------------------------------------------------
    def start(self) -> FakeVertex:
        """Serve on a free port of 127.0.0.1."""
        handlers = {
            "CreateCustomJob": grpc.unary_unary_rpc_method_handler(
                self._create,
                request_deserializer=CreateCustomJobRequest.deserialize,
                response_serializer=CustomJob.serialize,
            ),
            "GetCustomJob": grpc.unary_unary_rpc_method_handler(
                self._get,
                request_deserializer=GetCustomJobRequest.deserialize,
                response_serializer=CustomJob.serialize,
            ),
            "ListCustomJobs": grpc.unary_unary_rpc_method_handler(
                self._list,
                request_deserializer=ListCustomJobsRequest.deserialize,
                response_serializer=ListCustomJobsResponse.serialize,
            ),
            "CancelCustomJob": grpc.unary_unary_rpc_method_handler(
                self._cancel,
                request_deserializer=CancelCustomJobRequest.deserialize,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving; end every job's process."""
        self.release()
        for run in list(self.runs.values()):
            self._kill(run)
        if self._server is not None:
            self._server.stop(grace=None)

    # Clients the provider's hooks hand out ----------------------------------------------------------
    def client(self, region: str | None) -> JobServiceClient:
        """The real sync client, bound to this service (``region`` is the endpoint the hook asked for)."""
        self._check_region(region)
        channel = grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        return JobServiceClient(transport=JobServiceGrpcTransport(channel=channel))

    def async_client(self, region: str | None) -> JobServiceAsyncClient:
        """The real asyncio client, bound to this service (create it inside the running loop)."""
        self._check_region(region)
        channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        return JobServiceAsyncClient(transport=JobServiceGrpcAsyncIOTransport(channel=channel))

    def _check_region(self, region: str | None) -> None:
        if region != self.region:
            raise AssertionError(f"the hook asked for region {region!r}; the jobs live in {self.region!r}")

    # Test controls -----------------------------------------------------------------------------------
    def hold(self) -> None:
        """Keep new jobs QUEUED (no capacity) until ``release``."""
        self._queue_open.clear()

    def release(self) -> None:
        """Let queued jobs run."""
        self._queue_open.set()

    def wait_for_state(self, state: str, timeout: float = 30.0) -> Run:
        """The first job that reaches ``state`` (polls; fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in list(self.runs.values()):
                if state in run.states:
                    return run
            time.sleep(0.02)
        raise AssertionError(f"no job reached {state} within {timeout}s: {self.states()}")

    def states(self) -> dict[str, list[str]]:
        """Every job's state history, by job id."""
        return {job_id: list(run.states) for job_id, run in self.runs.items()}

    # JobService ------------------------------------------------------------------------------------------
    def _create(self, request: CreateCustomJobRequest, context: grpc.ServicerContext) -> CustomJob:
        self.calls.append("CreateCustomJob")
        wire = CreateCustomJobRequest.serialize(request)
        if CreateCustomJobRequest.deserialize(wire) != request:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request does not survive a round trip")
        problem = invalid(request, self.project, self.region)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        self.requests.append(request)
        job = CustomJob.deserialize(CustomJob.serialize(request.custom_job))
        job_id = str(next(self._ids))
        job.name = f"{request.parent}/customJobs/{job_id}"
        job.create_time = datetime.now(UTC)
        run = Run(job=job)
        self.runs[job_id] = run
        self._set(run, JobState.JOB_STATE_QUEUED)
        threading.Thread(target=self._run, args=(job_id,), daemon=True).start()
        return CustomJob.deserialize(CustomJob.serialize(job))

    def _get(self, request: GetCustomJobRequest, context: grpc.ServicerContext) -> CustomJob:
        self.calls.append("GetCustomJob")
        run = self._find(request.name, context)
        with self._lock:
            return CustomJob.deserialize(CustomJob.serialize(run.job))

    def _list(self, request: ListCustomJobsRequest, context: grpc.ServicerContext) -> ListCustomJobsResponse:
        self.calls.append("ListCustomJobs")
        if request.parent != f"projects/{self.project}/locations/{self.region}":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"no access to {request.parent}")
        terms = [t for t in re.split(r"\bAND\b", request.filter) if t.strip()] if request.filter else []
        wanted = []
        for term in terms:
            match = _FILTER_TERM.match(term)
            if not match:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter term {term!r}")
            wanted.append((match.group(1), match.group(2)))
        with self._lock:
            jobs = [r.job for r in self.runs.values() if all(_field(r.job, k) == v for k, v in wanted)]
            return ListCustomJobsResponse(
                custom_jobs=[CustomJob.deserialize(CustomJob.serialize(j)) for j in jobs]
            )

    def _cancel(self, request: CancelCustomJobRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.calls.append("CancelCustomJob")
        run = self._find(request.name, context)
        with self._lock:
            run.cancelled = True
            ended = run.job.state.name in {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}
        if ended:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} has already ended")
        self._set(run, JobState.JOB_STATE_CANCELLING)
        self._kill(run)
        return empty_pb2.Empty()

    def _find(self, name: str, context: grpc.ServicerContext) -> Run:
        prefix = f"projects/{self.project}/locations/{self.region}/customJobs/"
        run = self.runs.get(name.removeprefix(prefix)) if name.startswith(prefix) else None
        if run is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"CustomJob {name} not found")
        return run  # type: ignore[return-value]  # abort() raises

    # Running a job ---------------------------------------------------------------------------------------
    def _set(self, run: Run, state: JobState, error: tuple[int, str] | None = None) -> None:
        with self._lock:
            run.job.state = state
            now = datetime.now(UTC)
            run.job.update_time = now
            if state == JobState.JOB_STATE_RUNNING:
                run.job.start_time = now
            if state in (
                JobState.JOB_STATE_SUCCEEDED,
                JobState.JOB_STATE_FAILED,
                JobState.JOB_STATE_CANCELLED,
            ):
                run.job.end_time = now
            if error is not None:
                run.job.error = status_pb2.Status(code=error[0], message=error[1])
            run.states.append(state.name)

    def _run(self, job_id: str) -> None:
        run = self.runs[job_id]
        while not self._queue_open.wait(0.02):
            if run.cancelled:
                break
        if run.cancelled:
            self._set(run, JobState.JOB_STATE_CANCELLED, (1, "CANCELED"))
            return
        pool = run.job.job_spec.worker_pool_specs[0]
        image = self.images.get(pool.container_spec.image_uri)
        if image is None:
            self._set(run, JobState.JOB_STATE_PENDING)
            message = f"Unable to pull the image {pool.container_spec.image_uri}: manifest unknown"
            self._set(run, JobState.JOB_STATE_FAILED, (5, message))
            return
        self._set(run, JobState.JOB_STATE_RUNNING)
        self._execute(job_id, run, image)

    def _execute(self, job_id: str, run: Run, image: Image) -> None:
        spec = run.job.job_spec
        container = spec.worker_pool_specs[0].container_spec
        env = {
            **image.env,
            **self.platform_env,
            **vertex_variables(run.job, job_id, self.project),
            **{var.name: var.value for var in container.env},
        }
        argv = [*container.command, *container.args]
        with self._lock:
            if run.cancelled:
                argv = []
            else:
                run.process = subprocess.Popen(
                    argv,
                    cwd=image.workdir,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
        if not argv or run.process is None:
            self._set(run, JobState.JOB_STATE_CANCELLED, (1, "CANCELED"))
            return
        timeout = spec.scheduling.timeout.total_seconds() if spec.scheduling.timeout else None
        try:
            out, err = run.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(run)
            out, err = run.process.communicate()
            run.output = out + err
            self._set(run, JobState.JOB_STATE_FAILED, (4, f"The job exceeded its timeout of {timeout:g}s."))
            return
        run.output = out + err
        self._finish(run, run.process.returncode, err)

    def _finish(self, run: Run, code: int, err: str) -> None:
        if run.cancelled:
            self._set(run, JobState.JOB_STATE_CANCELLED, (1, "CANCELED"))
        elif code == 0:
            self._set(run, JobState.JOB_STATE_SUCCEEDED)
        else:
            last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
            message = (
                f"The replica workerpool0-0 exited with a non-zero status of {code}. "
                f"Termination reason: Error.\n{last}"
            )
            self._set(run, JobState.JOB_STATE_FAILED, (13, message))

    @staticmethod
    def _kill(run: Run) -> None:
        process = run.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def vertex_variables(job: CustomJob, job_id: str, project: str) -> dict[str, str]:
    """The variables Vertex AI sets in a custom job's primary replica."""
    base = job.job_spec.base_output_directory.output_uri_prefix.rstrip("/")
    cluster = {
        "cluster": {"workerpool0": [f"cmle-training-workerpool0-{job_id}-0:2222"]},
        "environment": "cloud",
        "task": {"type": "workerpool0", "index": 0},
        "job": json.dumps({"job_id": job_id}),
    }
    return {
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
        "CLOUD_ML_JOB_ID": job_id,
        "CLOUD_ML_PROJECT_ID": project,
        "CLUSTER_SPEC": json.dumps(cluster),
    }


def invalid(request: CreateCustomJobRequest, project: str, region: str) -> str | None:
    """What Vertex would refuse in a create request (``None`` when it would accept it)."""
    job = request.custom_job
    spec = job.job_spec
    checks: list[tuple[bool, str]] = [
        (request.parent != f"projects/{project}/locations/{region}", f"no access to {request.parent}"),
        (not job.display_name or len(job.display_name) > 128, "display_name must be 1-128 characters"),
        (bool(job.name) or job.state != JobState.JOB_STATE_UNSPECIFIED, "name and state are output only"),
        (not spec.worker_pool_specs, "job_spec.worker_pool_specs is required"),
        (
            bool(spec.worker_pool_specs) and spec.worker_pool_specs[0].replica_count != 1,
            "worker_pool_specs[0] (the primary replica) must have replica_count 1",
        ),
        (
            not spec.base_output_directory.output_uri_prefix.startswith("gs://"),
            "base_output_directory.output_uri_prefix must be a gs:// URI",
        ),
        (len(job.labels) > 64, "at most 64 labels"),
    ]
    checks += [
        (not (_LABEL_KEY.match(k) and _LABEL_VALUE.match(v)), f"invalid label {k}={v!r}")
        for k, v in job.labels.items()
    ]
    for index, pool in enumerate(spec.worker_pool_specs):
        checks += _pool_checks(index, pool)
    return next((message for failed, message in checks if failed), None)


def _pool_checks(index: int, pool: Any) -> list[tuple[bool, str]]:
    machine, container = pool.machine_spec, pool.container_spec
    names = [var.name for var in container.env]
    gpu_type_set = machine.accelerator_type.name != "ACCELERATOR_TYPE_UNSPECIFIED"
    where = f"worker_pool_specs[{index}]"
    return [
        (
            not _MACHINE.match(machine.machine_type),
            f"{where}: machine type {machine.machine_type!r} is not supported",
        ),
        (gpu_type_set != (machine.accelerator_count > 0), f"{where}: accelerator type and count go together"),
        (pool.replica_count < 1, f"{where}: replica_count must be at least 1"),
        (not container.image_uri, f"{where}: container_spec.image_uri is required"),
        (len(names) != len(set(names)), f"{where}: duplicate environment variable names"),
        (
            pool.disk_spec.boot_disk_size_gb and pool.disk_spec.boot_disk_size_gb < 10,
            f"{where}: boot disk too small",
        ),
    ]


def _field(job: CustomJob, key: str) -> str:
    if key == "display_name":
        return job.display_name
    if key == "state":
        return job.state.name
    return job.labels.get(key.removeprefix("labels."), "")


def install(monkeypatch: Any, fake: FakeVertex) -> None:
    """Make the provider's hooks hand out clients bound to ``fake`` (the only thing patched)."""
    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobAsyncHook, CustomJobHook

    def sync_client(hook: CustomJobHook, region: str | None = None) -> JobServiceClient:
        return fake.client(region)

    async def async_client(hook: CustomJobAsyncHook, region: str | None = None) -> JobServiceAsyncClient:
        return fake.async_client(region)

    monkeypatch.setattr(CustomJobHook, "get_job_service_client", sync_client)
    monkeypatch.setattr(CustomJobAsyncHook, "get_job_service_client", async_client)


# GCS ------------------------------------------------------------------------------------------------
def _move_object(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    """``POST .../o/{object}/moveTo/o/{destination}``: what gcsfs commits a write with (the emulator
    lacks it; without it gcsfs retries for half a minute, then copies and deletes)."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    params = request.params
    try:
        moved = objects._copy(  # the emulator's own copy, then delete the source
            request.base_url,
            storage,
            params["bucket_name"],
            params["object_id"],
            params["bucket_name"],
            params["dest_object_id"],
        )
        storage.delete_file(params["bucket_name"], params["object_id"])
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    response.json(moved)


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator in memory on a free port (with ``moveTo``); yields its URL."""
    from gcp_storage_emulator import server as emulator

    route = (
        r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$",
        {"POST": _move_object},
    )
    handlers = emulator.HANDLERS
    emulator.HANDLERS = (route, *handlers)
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        emulator.HANDLERS = handlers


def gcs_env(url: str) -> dict[str, str]:
    """Environment that points gcsfs at the emulator, anonymously (a job's stand-in for workload
    identity); ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` off: the emulator has no storage-control API."""
    return {
        "STORAGE_EMULATOR_HOST": url,
        "FSSPEC_GCS_TOKEN": "anon",
        "FSSPEC_GCS_PROJECT": PROJECT,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def use_gcs_here(monkeypatch: Any, url: str) -> None:
    """Point this process's gcsfs at the emulator (``gcs_env``, applied to an already imported fsspec)."""
    import importlib

    import fsspec
    import gcsfs.core

    for name, value in gcs_env(url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "gcs", {"token": "anon", "project": PROJECT})
    registry = importlib.import_module("fsspec.registry")._registry  # the package hides the module
    for protocol in ("gs", "gcs"):  # the plain GCSFileSystem, not the HNS-probing one
        monkeypatch.setitem(registry, protocol, gcsfs.core.GCSFileSystem)
    gcsfs.core.GCSFileSystem.clear_instance_cache()


def poll(check: Callable[[], Any], timeout: float, message: str, interval: float = 0.05) -> Any:
    """``check()``'s first truthy value, polled every ``interval`` s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} within {timeout}s")
