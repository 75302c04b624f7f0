"""Deprecated path: the REST client moved to :mod:`aispike_hub.admission.client` (issue #18).

A re-export for code not yet updated; import ``AdmissionClient`` and ``AdmissionError`` from
``aispike_hub.admission.client`` and ``progress_message`` from ``aispike_hub.admission.hub``.
To be removed once every importer has moved.  ``c.AdmissionClient`` configuration is unchanged
(traitlets configures by class name), and so is the class: this is the same object.
"""

from aispike_hub.admission.client import AdmissionClient, AdmissionError
from aispike_hub.admission.hub import progress_message

__all__ = ["AdmissionClient", "AdmissionError", "progress_message"]
