"""AISpike Hub: GPU-memory slices, affinity, quotas and idle reclaim for JupyterHub."""

__version__ = "0.1.0.dev0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt lab extension (``npm run build`` in labextension/ writes it here).

    On the top-level package because ``jupyter labextension develop .`` looks here first.
    """
    return [{"src": "labextension", "dest": "aispike-hub-lab"}]
