"""Kubernetes adapters: read the cluster into :mod:`aispike_hub.model` types and build manifests.

Manifest builders here are pure functions of data (no I/O, no clock), in the style of
KubeSpawner's ``objects.py``, so that the node agent, the service, the test stack and the
benchmarks all publish and read exactly the same shapes.
"""
