"""Deprecated path: the spawner's admission moved to :mod:`aispike_hub.admission` (issue #18).

A re-export for code not yet updated; import from ``aispike_hub.admission.protocol``
(``Admission``), ``.inprocess`` (``InProcessAdmission``), ``.inventory`` (``NodesInventory``)
and ``.hub`` (``admit_or_raise``, ``form_choice_within_quota``, ``fit_preview``).  To be removed
once every importer (and ``admission_class`` strings in configs) has moved; the class
``aispike_hub.spawner.admission.InProcessAdmission`` is the same object as the new one.
"""

from aispike_hub.admission.hub import (
    PREVIEW_IN_PROCESS,
    PREVIEW_NO_TOKEN,
    PREVIEW_OFF,
    FitPreview,
    admit_or_raise,
    fit_preview,
    form_choice_within_quota,
)
from aispike_hub.admission.inprocess import InProcessAdmission
from aispike_hub.admission.inventory import NodesInventory
from aispike_hub.admission.protocol import Admission

__all__ = [
    "PREVIEW_IN_PROCESS",
    "PREVIEW_NO_TOKEN",
    "PREVIEW_OFF",
    "Admission",
    "FitPreview",
    "InProcessAdmission",
    "NodesInventory",
    "admit_or_raise",
    "fit_preview",
    "form_choice_within_quota",
]
