"""The node agent: reads this node's GPUs, their use and its dataset cache, and publishes them.

It is an adapter (docs/architecture.md, "Layers"): it turns NVML readings, ``/proc`` and a
cache directory into core types, and writes the Kubernetes objects built from them.  Pure logic
(topology reduction, cgroup parsing, eviction planning, manifest building) lives in functions
that take data and return data, so the unit tests run on recorded machines without a GPU or a
cluster.
"""
