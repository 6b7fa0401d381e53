"""Fixtures of the backend tests: the emulated Kubernetes cluster (see ``tests/backends/kube``).

``kube_cluster`` (session) serves the Kubernetes API from a thread of the pytest process on
127.0.0.1: any process (an Airflow stack's scheduler, triggerer, workers) reaches it through
``kube_cluster.kubeconfig_path`` / ``kube_cluster.airflow_conn_env()``, and its pods run as child
processes of the pytest process. ``kube_cluster_process`` serves it from a separate
``python -m tests.backends.kube`` process instead, for a test that must survive the pytest
process's state (it costs one interpreter start). ``kube_namespace`` is a fresh namespace per test
so tests sharing the session cluster never see each other's pods.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.kube import KubeCluster


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """An emulated cluster for the session, served from a thread of this process."""
    cluster = KubeCluster.in_thread()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def kube_cluster_process() -> Iterator[KubeCluster]:
    """An emulated cluster for the session, served from its own process."""
    cluster = KubeCluster.in_process()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster) -> str:
    """A fresh namespace of the session cluster for one test."""
    return kube_cluster.new_namespace()
