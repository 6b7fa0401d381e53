"""A Kubernetes test cluster without Kubernetes: an HTTP API emulator on 127.0.0.1 plus a test kubelet.

The real ``kubernetes`` and ``kubernetes_asyncio`` clients (hence the cncf-kubernetes provider's
``KubernetesPodOperator``, ``PodManager``, ``AsyncKubernetesHook`` and ``KubernetesPodTrigger``)
talk to it as to a cluster: pods are scheduled against one node, their images "pulled" from a
registry of known images, and their containers run as local processes whose phase, exit code,
termination message and logs come back through the API. ``KubeCluster`` is the test's handle;
``python -m tests.backends.kube --port N`` serves one standalone. kmock's ``KubernetesEmulator``
was the first choice, but it stores objects as plain JSON without selectors, resource versions,
uids, subresources (logs, status) or strategic merge, which the provider relies on.
"""

from tests.backends.kube.cluster import PROJECT_IMAGE, ApiFailure, KubeCluster

__all__ = ["PROJECT_IMAGE", "ApiFailure", "KubeCluster"]
