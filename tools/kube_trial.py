"""Try a pipeline spec with a Kubernetes backend on the project's test cluster, end to end.

``python -m tools.kube_trial SPEC.yaml [--dataset churn|housing] [--rows N] [--workdir DIR]``
(``make try-kube SPEC=...``). No cluster is needed; everything listens on 127.0.0.1:

- the emulated Kubernetes API and its test kubelet (``tests/backends/kube``): the spec's image is
  registered as this checkout, and its pods run as local processes of it;
- an ``mlflow server`` (a pod cannot log into the embedded SQLite store);
- the embedded Airflow stack (scheduler, dag-processor, triggerer, API server) with only this spec.

What the spec's ``kubernetes`` sections name is provisioned on the test cluster: the namespace, the
service account, the data volume's claim, and empty secrets for ``image_pull_secrets`` and
``env_from_secrets`` (their real contents are the cluster's business); the test node gets the
labels of ``node_selector`` and the GPUs of ``resources``. The data root is the data volume's
``mount_path`` on this host (the test kubelet mounts nothing: the path must exist here), so the spec
needs ``kubernetes.data_volume``.

Then ingest -> train (a pod) -> gate -> promote -> score (a pod per partition) -> drift run through
the real scheduler on generated data (``--dataset``: the data generator's churn or housing data;
the spec's columns and suite must fit it). Each step is printed with the pods it ran; exit status 0
when every step held, 1 when one did not, 2 when the spec cannot be tried (with the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.stack import ADMIN, Stack, free_port

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("churn", "housing")


class CannotTry(Exception):
    """The spec cannot run on the test cluster; the message says why and what to change (exit 2)."""


@dataclass
class Trial:
    """A running trial: the Airflow API, the cluster, the MLflow server and where things live."""

    api: Any
    cluster: Any
    server: Any
    root: Path
    spec: Any


def kubernetes_sections(spec: Any) -> list[Any]:
    """The ``kubernetes`` sections the spec's training and inference run with (one if shared)."""
    sections = []
    for stage in ("training", "inference"):
        backend, section = spec.backend_of(stage)
        if backend == "kubernetes" and section is not None and section not in sections:
            sections.append(section)
    if not sections:
        raise CannotTry(
            f"{spec.source}: neither training.backend nor inference.backend is kubernetes; "
            "set training.backend: kubernetes with a training.kubernetes section (docs/backends.md)"
        )
    return sections


def data_root(sections: list[Any], spec: Any) -> Path:
    """The host folder the pods and the stack share: the data volume's mount path."""
    mounts = {s.data_volume.mount_path for s in sections if s.data_volume is not None}
    if len(mounts) != 1 or any(s.data_volume is None for s in sections):
        raise CannotTry(
            f"{spec.source}: the test cluster reaches data through kubernetes.data_volume (a claim "
            "mounted where the data root lives); give every kubernetes section the same data_volume "
            "(claim_name, mount_path)"
        )
    return Path(mounts.pop())


def declared_mount(spec_path: Path) -> str | None:
    """``kubernetes.data_volume.mount_path`` of the training (else inference) section, read before
    the spec is loaded (the loader needs the data root to be there already)."""
    import yaml

    try:
        raw = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
        for stage in ("training", "inference"):
            volume = ((raw.get(stage) or {}).get("kubernetes") or {}).get("data_volume") or {}
            if isinstance(volume.get("mount_path"), str):
                return str(volume["mount_path"])
    except (OSError, yaml.YAMLError, AttributeError):
        return None  # the loader says what is wrong with the file
    return None


def provision(cluster: Any, sections: list[Any], pipelines: Path) -> list[str]:
    """Create on the test cluster what the sections name; what was done, one line each."""
    done = []
    for section in sections:
        namespace = section.namespace
        cluster.add_namespace(namespace)
        cluster.register_project_image(section.image, env={"MLOPS_PIPELINES_DIR": str(pipelines)})
        done.append(f"image {section.image} = this checkout")
        if section.service_account:
            cluster.add_service_account(namespace, section.service_account)
            done.append(f"service account {namespace}/{section.service_account}")
        if section.data_volume is not None:
            cluster.add_volume_claim(namespace, section.data_volume.claim_name)
            done.append(
                f"claim {namespace}/{section.data_volume.claim_name} at {section.data_volume.mount_path}"
            )
        for name in section.image_pull_secrets:
            cluster.add_secret(
                namespace, name, {".dockerconfigjson": "{}"}, type="kubernetes.io/dockerconfigjson"
            )
            done.append(f"image pull secret {namespace}/{name} (empty)")
        for name in section.env_from_secrets:
            cluster.add_secret(namespace, name, {})
            done.append(f"secret {namespace}/{name} (empty)")
    labels = {k: v for s in sections for k, v in s.node_selector.items()}
    if labels:
        cluster.node_labels = {**cluster.node_labels, **labels}
        done.append(f"node labels {labels}")
    gpus = max((int(s.resources.limits.get("nvidia.com/gpu", 0)) for s in sections), default=0)
    if gpus:
        cluster.node_capacity = {**cluster.node_capacity, "nvidia.com/gpu": str(gpus)}
        done.append(
            f"node capacity nvidia.com/gpu={gpus} (the test kubelet has no GPU: the code runs on the CPU)"
        )
    return done


@contextmanager
def trial(spec_path: Path, workdir: Path, *, announce: Any = print) -> Iterator[Trial]:
    """The test cluster, an MLflow server and an Airflow stack with only ``spec_path``, up."""
    from include.mlops.errors import SpecError
    from include.mlops.spec import load_spec
    from tests.backends.kube import KubeCluster
    from tools.airflow_api import AirflowApi
    from tools.mlflow_server import MlflowServer

    pipelines = workdir / "pipelines"
    pipelines.mkdir(parents=True, exist_ok=True)
    shutil.copy2(spec_path, pipelines / spec_path.name)
    saved = dict(os.environ)
    # The data root is where the volume is mounted: the loader checks the pods can reach the data.
    os.environ.update(MLOPS_PIPELINES_DIR=str(pipelines), MLOPS_STATE_DIR=str(workdir / "state"))
    os.environ.update({"MLOPS_DATA_ROOT": mount} if (mount := declared_mount(spec_path)) else {})
    try:
        spec = load_spec(pipelines / spec_path.name)
        sections = kubernetes_sections(spec)
        data = data_root(sections, spec)
        data.mkdir(parents=True, exist_ok=True)
    except (OSError, SpecError, CannotTry) as exc:
        os.environ.clear()
        os.environ.update(saved)
        where = (
            "the data volume's mount_path cannot be created on this host: "
            if isinstance(exc, OSError)
            else ""
        )
        raise CannotTry(f"{where}{exc}") from None
    cluster = KubeCluster.in_thread()
    server = MlflowServer(workdir / "mlflow")
    stack = Stack(
        state=workdir / "state", airflow_port=free_port(), with_mlflow_ui=False, disable_schedules=True
    )
    try:
        for line in provision(cluster, sections, pipelines):
            announce(f"  cluster: {line}")
        server.start().wait()
        announce(f"  mlflow server: {server.uri}")
        os.environ.update(
            {
                "MLOPS_DATA_ROOT": str(data),
                "MLFLOW_TRACKING_URI": server.uri,
                "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                    {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "http"}
                ),
                **cluster.airflow_conn_env(),
            }
        )
        for section in sections:  # the spec may name its own connection id
            os.environ.update(cluster.airflow_conn_env(section.kubernetes_conn_id))
        os.environ.update(stack.env())
        stack.up()
        announce(f"  airflow: {stack.api_url} ({ADMIN[0]}/{ADMIN[1]})")
        yield Trial(
            api=AirflowApi(stack.api_url, *ADMIN), cluster=cluster, server=server, root=workdir, spec=spec
        )
    finally:
        stack.down()
        server.stop()
        cluster.close()
        os.environ.clear()
        os.environ.update(saved)


def pods_of(cluster: Any, dag_id: str) -> list[dict[str, Any]]:
    """Every pod a DAG's tasks ran (also deleted ones), from their lineage labels."""
    return [
        p
        for p in cluster.all_pods_ever()
        if p["metadata"].get("labels", {}).get("airflow-mlops/dag-id") == dag_id
    ]


def run(spec_path: Path, workdir: Path, *, dataset: str | None, rows: int) -> int:
    """The lifecycle on the test cluster; 0 when every step held."""
    import yaml

    from tools.scenario import Driver, Outcome, run_short_path

    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
        name = str(yaml.safe_load(spec_path.read_text(encoding="utf-8")).get("name"))
        if dataset is None and name not in DATASETS:
            raise CannotTry(
                f"pipeline {name!r}: say which generated data fits it: --dataset {'|'.join(DATASETS)}"
            )
    print(f"Trying {spec_path} on the test cluster (work folder {workdir})")
    with trial(spec_path, workdir) as t:
        name = t.spec.name
        chosen = dataset or name
        errors = t.api.import_errors()
        if errors:
            print(f"DAG import errors: {errors}")
            return 1
        outcome = run_short_path(t.api, name, rows=rows, dataset=chosen)
        drift = None
        if not outcome.failures:
            drift = Driver(t.api, Outcome(name), timeout=600).trigger("drift")
        for dag in (f"{name}__train", f"{name}__inference"):
            for pod in pods_of(t.cluster, dag):
                print(f"  pod {pod['metadata']['name']}: {pod['status'].get('phase')}")
        held = not outcome.failures and drift is not None and drift["state"] == "success"
        print("The lifecycle held on the test cluster." if held else f"Failures: {outcome.failures or drift}")
        return 0 if held else 1


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.kube_trial", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="the pipeline spec (YAML) to try")
    parser.add_argument("--dataset", choices=DATASETS, help="generated data to feed it (default: its name)")
    parser.add_argument("--rows", type=int, default=4000, help="rows of the first batch (default 4000)")
    parser.add_argument("--workdir", type=Path, help="where everything lives (default: a temporary folder)")
    args = parser.parse_args(argv)
    try:
        if not args.spec.is_file():
            raise CannotTry(f"{args.spec}: no such file")
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kube-trial-"))
        return run(args.spec.resolve(), workdir.resolve(), dataset=args.dataset, rows=args.rows)
    except CannotTry as exc:
        print(f"kube_trial: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
