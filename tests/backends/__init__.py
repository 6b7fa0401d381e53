"""Tests of the remote backends (Kubernetes, SageMaker, Vertex AI) against local emulators."""
