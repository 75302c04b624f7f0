"""jupyter-server side of AISpike Hub (runs inside the notebook server).

``aispike_hub.serverext`` is the server extension (:class:`aispike_hub.serverext.app.AISpikeLab`),
enabled on install (``etc/jupyter/jupyter_server_config.d/aispike_hub.json``); it also starts
:mod:`aispike_hub.serverext.gpu_activity`.
"""

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from aispike_hub.serverext.app import AISpikeLab

    return [{"module": "aispike_hub.serverext", "app": AISpikeLab}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt lab extension, relative to this package's directory.

    ``npm run build`` in labextension/ writes it to ``aispike_hub/labextension/`` (the package.json
    ``jupyterlab.outputDir``), one level up from here; ``jupyter labextension develop .`` links it.
    """
    return [{"src": "../labextension", "dest": "aispike-hub-lab"}]
