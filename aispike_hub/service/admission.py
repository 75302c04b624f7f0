"""Deprecated path: admission moved to :mod:`aispike_hub.admission` (issue #18).

A re-export for code not yet updated; import from ``aispike_hub.admission.controller``,
``.wire`` or ``.inventory`` instead.  To be removed once every importer has moved.
"""

from aispike_hub.admission.controller import (
    AdmissionController,
    key_of,
    server_of,
    user_ceiling,
)
from aispike_hub.admission.inventory import Inventory, StaticInventory, server_assignments
from aispike_hub.admission.wire import (
    RequestError,
    Ticket,
    assignment_from_dict,
    assignment_to_dict,
    request_from_dict,
    request_to_dict,
)

__all__ = [
    "AdmissionController",
    "Inventory",
    "RequestError",
    "StaticInventory",
    "Ticket",
    "assignment_from_dict",
    "assignment_to_dict",
    "key_of",
    "request_from_dict",
    "request_to_dict",
    "server_assignments",
    "server_of",
    "user_ceiling",
]
