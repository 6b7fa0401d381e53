"""Moto's server as SageMaker, S3, IAM and CloudWatch Logs on 127.0.0.1, with jobs that really run.

Moto records a SageMaker job and reports it Completed at once without running anything; it keeps
no ``Environment`` and has no ``StopTrainingJob``. ``SageMakerJobs`` extends the server in-process
(``ThreadedMotoServer`` runs in a thread of the test process, so its response classes and backends
are ours to extend; the amazon provider talks to it over HTTP like to AWS):

- ``CreateTrainingJob`` / ``CreateProcessingJob`` refuse, as SageMaker does, a role it cannot assume
  (one that does not exist in moto's IAM) and a name already used; they keep the job's
  ``Environment`` (and the processing job's ``ProcessingResources``) and leave the job ``InProgress``;
- a thread per job then runs what the project image would run, in SageMaker's file layout under a
  temporary ``MLOPS_SAGEMAKER_ROOT`` (``/opt/ml`` in a real container): ``python -m include.mlops
  train`` with ``input/config/hyperparameters.json`` from the job's ``HyperParameters``, or the
  processing job's ``ContainerEntrypoint`` + ``ContainerArguments``; with the job's ``Environment``
  over what the image sets, and the credentials the platform gives a container (fake keys and
  moto's endpoint stand for the job's role);
- the job's output goes to CloudWatch Logs (``/aws/sagemaker/<Kind>Jobs``, stream
  ``<job>/algo-1-<time>``), a training job's ``model/`` to ``<S3OutputPath>/<job>/output/model.tar.gz``;
  the job ends ``Completed``, or ``Failed`` with ``FailureReason`` = the first 1,024 characters of
  ``output/failure`` (else the exit code);
- ``StopTrainingJob`` / ``StopProcessingJob`` terminate the container: ``Stopping``, then ``Stopped``.

``hold(prefix)`` keeps new jobs whose name starts with ``prefix`` ``InProgress`` without starting
them (SageMaker provisioning instances) until ``release(prefix)``; ``fail_next(prefix, reason)``
fails the next one before its container runs (an infrastructure error such as a capacity shortage).

Also here: an ``mlflow server`` process, the Airflow connections for both, a task context, and a
strict check of a request against botocore's service model (types, required members, and the
length, range, pattern and enum limits botocore's own validator leaves to the service).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
FAILURE_LIMIT = 1024  # SageMaker keeps the first 1,024 characters of /opt/ml/output/failure


def free_port() -> int:
    """A port the OS just handed out and released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


@dataclass
class JobRun:
    """One SageMaker job as the fake platform runs it."""

    kind: str  # "Training" | "Processing"
    name: str
    job: Any  # moto's FakeTrainingJob / FakeProcessingJob, updated in place
    environment: dict[str, str]
    command: list[str]
    root: Path
    request: dict[str, Any] = field(default_factory=dict)  # the Create*Job body
    hyperparameters: dict[str, str] | None = None
    model_uri: str | None = None
    output: list[str] = field(default_factory=list)  # the container's lines, and when each came
    times: list[int] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    stop_requested: bool = False
    created: float = field(default_factory=time.monotonic)
    ended: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def status(self) -> str:
        """The status moto reports for the job."""
        return str(getattr(self.job, f"{self.kind.lower()}_job_status"))


class SageMakerJobs:
    """Moto's server extended so SageMaker jobs really run the project's entry point (see module doc)."""

    def __init__(self, work_dir: Path, image_env: dict[str, str]) -> None:
        self.work_dir = work_dir
        self.image_env = image_env  # what the project image sets (PYTHONPATH, its pipeline specs, ...)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.runs: dict[str, JobRun] = {}
        self.created: list[dict[str, Any]] = []  # every Create*Job request body moto accepted
        self._held: set[str] = set()
        self._failures: dict[str, str] = {}
        self._lock = threading.Condition()
        self._server: Any = None
        self._originals: dict[str, Any] = {}

    # Life cycle -------------------------------------------------------------------------------------
    def start(self) -> SageMakerJobs:
        """Start the server and extend SageMaker's responses."""
        from moto.server import ThreadedMotoServer

        self._install()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        """Terminate running containers, restore moto's classes, stop the server."""
        with self._lock:
            self._held.clear()
            for run in self.runs.values():
                run.stop_requested = True
            self._lock.notify_all()
        for run in list(self.runs.values()):
            self._terminate(run)
            run.done.wait(timeout=30)
        from moto.sagemaker.responses import SageMakerResponse

        for name, method in self._originals.items():
            if method is None:
                delattr(SageMakerResponse, name)
            else:
                setattr(SageMakerResponse, name, method)
        if self._server is not None:
            self._server.stop()

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` on the server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def connection(self) -> str:
        """``AIRFLOW_CONN_AWS_DEFAULT``: an aws connection with moto's endpoint and fake keys."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
            }
        )

    def platform_env(self) -> dict[str, str]:
        """What SageMaker gives a container: the region and the job role's credentials (here fake keys
        and moto's endpoint)."""
        return {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    # Test controls ----------------------------------------------------------------------------------
    def hold(self, prefix: str) -> None:
        """Keep new jobs named ``prefix...`` InProgress without starting their container."""
        with self._lock:
            self._held.add(prefix)

    def release(self, prefix: str) -> None:
        """Let held jobs named ``prefix...`` start."""
        with self._lock:
            self._held.discard(prefix)
            self._lock.notify_all()

    def fail_next(self, prefix: str, reason: str) -> None:
        """Fail the next job named ``prefix...`` before its container runs, with ``reason``."""
        with self._lock:
            self._failures[prefix] = reason

    def wait(self, name: str, timeout: float = 60) -> str:
        """Wait until job ``name`` has ended; its final status."""
        run = wait_until(lambda: self.runs.get(name), timeout, f"job {name} created")
        if not run.done.wait(timeout):
            raise TimeoutError(
                f"job {name} still {run.status} after {timeout} s:\n{''.join(run.output)[-3000:]}"
            )
        return run.status

    def names(self, kind: str = "Training") -> list[str]:
        """Names of the jobs of ``kind`` moto knows, in creation order."""
        return [r.name for r in self.runs.values() if r.kind == kind]

    # Moto extensions --------------------------------------------------------------------------------
    def _install(self) -> None:
        from moto.core.responses import EmptyResult
        from moto.sagemaker.responses import SageMakerResponse

        jobs = self

        def creator(kind: str) -> Callable[[Any], Any]:
            original = getattr(SageMakerResponse, f"create_{kind.lower()}_job")

            def create(response: Any) -> Any:
                name = response._get_param(f"{kind}JobName")
                jobs._admit(response, kind, name)
                result = original(response)
                jobs._accept(response, kind, name)
                return result

            return create

        def stopper(kind: str) -> Callable[[Any], Any]:
            def stop(response: Any) -> Any:
                jobs._stop(response, kind, response._get_param(f"{kind}JobName"))
                return EmptyResult()

            return stop

        for kind in ("Training", "Processing"):
            for verb, make in (("create", creator), ("stop", stopper)):
                attr = f"{verb}_{kind.lower()}_job"
                self._originals[attr] = vars(SageMakerResponse).get(attr)
                setattr(SageMakerResponse, attr, make(kind))

    def _admit(self, response: Any, kind: str, name: str) -> None:
        """SageMaker's checks before a job exists: the role can be assumed, the name is new."""
        from moto.iam.models import iam_backends
        from moto.sagemaker.exceptions import ValidationError

        role = response._get_param("RoleArn")
        try:
            iam_backends[response.current_account]["aws"].get_role_by_arn(role)
        except Exception:
            raise ValidationError(
                f"Could not assume role {role}. Please ensure that the role exists and allows principal "
                "'sagemaker.amazonaws.com' to assume the role."
            ) from None
        existing = getattr(response.sagemaker_backend, f"{kind.lower()}_jobs")
        if name in existing:
            raise ValidationError(
                f"{kind} job names must be unique within an AWS account and region, and a {kind.lower()} "
                f"job with this name already exists ({existing[name].arn})"
            )

    def _accept(self, response: Any, kind: str, name: str) -> None:
        """Keep what moto drops, mark the job InProgress and hand it to a runner thread."""
        from include.mlops.remote import ENTRY_POINT

        job = getattr(response.sagemaker_backend, f"{kind.lower()}_jobs")[name]
        job.environment = response._get_param("Environment") or {}
        job.failure_reason = None
        body = json.loads(response.body)
        self.created.append({"kind": kind, **body})
        run = JobRun(
            kind=kind,
            name=name,
            job=job,
            environment=dict(job.environment),
            command=[],
            root=self.work_dir / name,
            request=body,
        )
        if kind == "Training":
            job.training_job_status, job.secondary_status, job.training_end_time = (
                "InProgress",
                "Starting",
                None,
            )
            run.command = [*ENTRY_POINT, "train"]  # the image's entry point, with SageMaker's argument
            run.hyperparameters = dict(job.hyper_parameters or {})
            run.model_uri = job.model_artifacts["S3ModelArtifacts"]
        else:
            job.processing_job_status, job.processing_end_time = "InProgress", None
            job.processing_resources = response._get_param("ProcessingResources")
            app = job.app_specification
            run.command = [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]
        with self._lock:
            self.runs[name] = run
        threading.Thread(target=self._run, args=(run,), name=f"sagemaker-{name}", daemon=True).start()

    def _stop(self, response: Any, kind: str, name: str) -> None:
        from moto.sagemaker.exceptions import ValidationError

        run = self.runs.get(name)
        if run is None:
            raise ValidationError(f"Could not find {kind.lower()} job '{name}'.")
        if run.status != "InProgress":
            raise ValidationError(f"The {kind.lower()} job {name} is not in progress (status {run.status}).")
        self._set_status(run, "Stopping")
        with self._lock:
            run.stop_requested = True
            self._lock.notify_all()
        self._terminate(run)

    # The fake platform ------------------------------------------------------------------------------
    def _run(self, run: JobRun) -> None:
        try:
            reason = self._provision(run)
            if run.stop_requested:
                self._finish(run, "Stopped")
            elif reason is not None:
                self._finish(run, "Failed", reason)
            else:
                self._execute(run)
        except Exception as exc:  # the fake itself broke: make it visible as the job's failure
            self._finish(run, "Failed", f"InternalServerError: test platform error: {exc!r}")

    def _provision(self, run: JobRun) -> str | None:
        """Wait while the job is held; the injected infrastructure failure, if any."""
        with self._lock:
            while not run.stop_requested and any(run.name.startswith(p) for p in self._held):
                self._lock.wait(timeout=1)
            for prefix in list(self._failures):
                if run.name.startswith(prefix):
                    return self._failures.pop(prefix)
        return None

    def _execute(self, run: JobRun) -> None:
        self._layout(run)
        if run.kind == "Training":
            run.job.secondary_status = "Training"
            run.job.training_start_time = datetime.now(UTC)
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(run.root / "home"),
            "LANG": "C.UTF-8",
            **self.image_env,
            **self.platform_env(),
            **run.environment,
            "MLOPS_SAGEMAKER_ROOT": str(run.root),
        }
        if run.kind == "Training":  # SageMaker names a training job in its environment
            env |= {"TRAINING_JOB_NAME": run.name, "TRAINING_JOB_ARN": run.job.arn}
        with self._lock:
            if run.stop_requested:
                self._finish(run, "Stopped")
                return
            run.process = subprocess.Popen(
                run.command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        assert run.process.stdout is not None
        for line in run.process.stdout:
            run.output.append(line)
            run.times.append(int(time.time() * 1000))
        code = run.process.wait()
        self._send_log(run)
        if run.stop_requested:
            self._finish(run, "Stopped")
        elif code != 0:
            self._fail(run, code)
        else:
            self._finish(run, "Completed", self._upload_model(run))

    def _layout(self, run: JobRun) -> None:
        """SageMaker's files in the container before the entry point starts."""
        config = run.root / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        for folder in ("model", "output", "home"):
            (run.root / folder).mkdir(exist_ok=True)
        if run.kind == "Processing":
            (run.root / "config").mkdir(exist_ok=True)
            (run.root / "config" / "processingjobconfig.json").write_text(json.dumps(run.request))
        if run.hyperparameters is not None:
            (config / "hyperparameters.json").write_text(json.dumps(run.hyperparameters))
            (config / "inputdataconfig.json").write_text("{}")
            (config / "resourceconfig.json").write_text(
                json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
            )

    def _fail(self, run: JobRun, code: int) -> None:
        """A training job's FailureReason is ``output/failure``; a processing job's reason is generic
        and ``output/message`` becomes its ExitMessage."""
        if run.kind == "Training":
            self._finish(run, "Failed", self._read(run, "failure") or f"AlgorithmError: exit code {code}")
            return
        run.job.exit_message = self._read(run, "message")
        self._finish(run, "Failed", f"AlgorithmError: See job logs for more information (exit code {code})")

    def _read(self, run: JobRun, name: str) -> str | None:
        path = run.root / "output" / name
        text = path.read_text(errors="replace")[:FAILURE_LIMIT] if path.exists() else ""
        return text if text.strip() else None

    def _upload_model(self, run: JobRun) -> str | None:
        """Tar ``model/`` to ``ModelArtifacts.S3ModelArtifacts``; the failure reason if the upload fails."""
        if run.model_uri is None:
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(run.root / "model", arcname=".")
        bucket, _, key = run.model_uri.removeprefix("s3://").partition("/")
        try:
            self.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        except Exception as exc:
            return f"ClientError: Data upload failed: {exc}"
        return None

    def _send_log(self, run: JobRun) -> None:
        """The container's output as one CloudWatch stream, as SageMaker sends it."""
        logs = self.client("logs")
        group = f"/aws/sagemaker/{run.kind}Jobs"
        stream = f"{run.name}/algo-1-{int(time.time())}"
        try:
            logs.create_log_group(logGroupName=group)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        events = [
            {"timestamp": at, "message": line.rstrip("\n")}
            for at, line in zip(run.times, run.output, strict=True)
            if line.strip()
        ]
        for start in range(0, len(events), 500):
            logs.put_log_events(
                logGroupName=group, logStreamName=stream, logEvents=events[start : start + 500]
            )

    def _terminate(self, run: JobRun) -> None:
        process = run.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def _set_status(self, run: JobRun, status: str) -> None:
        setattr(run.job, f"{run.kind.lower()}_job_status", status)
        if run.kind == "Training":
            run.job.secondary_status = status
        run.job.last_modified_time = datetime.now(UTC)

    def _finish(self, run: JobRun, status: str, reason: str | None = None) -> None:
        if status == "Failed":
            run.job.failure_reason = reason
        now = datetime.now(UTC)
        if run.kind == "Training":
            run.job.training_start_time = getattr(run.job, "training_start_time", None) or now
            run.job.training_end_time = now
        else:
            run.job.processing_end_time = now
        self._set_status(run, status)
        run.ended = time.monotonic()
        run.done.set()


@contextmanager
def running(service: Any) -> Iterator[Any]:
    """``service.start()`` ... ``service.stop()``."""
    service.start()
    try:
        yield service
    finally:
        service.stop()


def task_context(
    operator: Any, *, dag_id: str, run_id: str, try_number: int = 1, map_index: int = -1
) -> dict[str, Any]:
    """The part of an Airflow task context the stage operators read."""
    from collections import defaultdict

    return {
        "dag": SimpleNamespace(dag_id=dag_id),
        "run_id": run_id,
        "task": operator,
        "ti": SimpleNamespace(try_number=try_number, map_index=map_index),
        "outlet_events": defaultdict(SimpleNamespace),
    }


# Requests against botocore's service model ----------------------------------------------------------
def check_request(operation: str, params: dict[str, Any]) -> list[str]:
    """Problems of ``params`` as the input of SageMaker ``operation``: botocore's own validation
    (types, required members, minimums) plus the maximums, patterns and enums of the service model
    that botocore leaves to the service. Empty when the request is valid."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    problems = (
        [line for line in report.generate_report().splitlines() if line.strip()]
        if report.has_errors()
        else []
    )
    _limits(params, shape, operation, problems)
    return problems


def _limits(value: Any, shape: Any, where: str, problems: list[str]) -> None:
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, item in value.items():
            if name in shape.members:
                _limits(item, shape.members[name], f"{where}.{name}", problems)
        return
    if shape.type_name == "list" and isinstance(value, list):
        _count(len(value), meta, where, problems)
        for i, item in enumerate(value):
            _limits(item, shape.member, f"{where}[{i}]", problems)
        return
    if shape.type_name == "map" and isinstance(value, dict):
        _count(len(value), meta, where, problems)
        for key, item in value.items():
            _limits(key, shape.key, f"{where} key {key!r}", problems)
            _limits(item, shape.value, f"{where}[{key!r}]", problems)
        return
    if shape.type_name == "string" and isinstance(value, str):
        _string(value, shape, where, problems)
    elif shape.type_name in ("integer", "long") and isinstance(value, int) and value > meta.get("max", value):
        problems.append(f"{where}: {value} is above the maximum {meta['max']}")


def _string(value: str, shape: Any, where: str, problems: list[str]) -> None:
    import regex

    meta = shape.metadata
    _count(len(value), meta, where, problems)
    if shape.enum and value not in shape.enum:
        problems.append(f"{where}: {value!r} is not one of {len(shape.enum)} allowed values")
    if "pattern" in meta and not regex.fullmatch(meta["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {meta['pattern']}")


def _count(size: int, meta: dict[str, Any], where: str, problems: list[str]) -> None:
    if "max" in meta and size > meta["max"]:
        problems.append(f"{where}: length {size} is above the maximum {meta['max']}")
