"""AISpike Hub: GPU-memory slices, affinity, quotas and idle reclaim for JupyterHub."""

__version__ = "0.1.0.dev0"
