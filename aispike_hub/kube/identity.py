"""Which hub an object belongs to: hub identity in ``aispike.io/hub-server`` (pure).

Two hubs may share a cluster.  Each names itself with a hub id (its namespace and Helm release,
``<namespace>.<release>``, or a configured ``hub_id``); the value of ``aispike.io/hub-server``
on its claims and pods is then ``<hub id>:<user>/<server>``, and its claims carry the label
``aispike.io/hub: <hub id>``.  A value without a hub id (``<user>/<server>``, every object written
before hub ids) belongs to the default hub, whose id is ``""``.  Each hub's inventory counts its
own servers per server and every other hub's as taken (another workload).

Where the id comes from (:func:`hub_id_from_env`): ``$AISPIKE_HUB_ID`` when set (the Helm
chart sets it on the hub and the service: ``aispike.hubId``, default ``<namespace>.<release>``),
else ``<$POD_NAMESPACE>.<$AISPIKE_HELM_RELEASE>`` when both are known, else ``""`` (the default
hub: one hub per cluster, as before hub ids).

Objects written before hub ids (a bare ``user/server``) belong to the default hub.  A hub with
an id adopts them only when it says so (``owns_unnamed``, :func:`belongs`): set it on the one
hub that was upgraded from a version without hub ids, so its running servers stay its own;
never on a second hub, which would then count, adopt and reconcile the first hub's objects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = [
    "DEFAULT_HUB",
    "HUB_ID_ENV",
    "OWNS_UNNAMED_ENV",
    "RELEASE_ENV",
    "belongs",
    "hub_id_for",
    "hub_id_from_env",
    "hub_server_value",
    "owns_unnamed_from_env",
    "refuse_bad_hub_id",
    "split_hub_server",
    "valid_hub_id",
]

HUB_ID_ENV = "AISPIKE_HUB_ID"
"""Environment variable naming this hub's id (the chart sets it on the hub and the service)."""
RELEASE_ENV = "AISPIKE_HELM_RELEASE"
"""Environment variable with the Helm release (with ``$POD_NAMESPACE``: ``<ns>.<release>``)."""
NAMESPACE_ENV = "POD_NAMESPACE"
OWNS_UNNAMED_ENV = "AISPIKE_HUB_OWNS_UNNAMED"
"""Environment variable: ``true`` when this hub also owns values without a hub id."""

DEFAULT_HUB = ""
"""The hub id of objects written without one (and of a hub that sets none)."""

_HUB_ID = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


def valid_hub_id(hub_id: str) -> bool:
    """True for ``""`` (the default hub) and DNS-label-like ids (lowercase, digits, ``.-``)."""
    return hub_id == DEFAULT_HUB or bool(_HUB_ID.match(hub_id))


def refuse_bad_hub_id(setting: str, value: object) -> str:
    """``value`` as a hub id, or ValueError naming ``setting``: the one check behind every
    ``hub_id`` setting (the spawner's, the inventory's), so they refuse with the same words."""
    text = str(value)
    if not valid_hub_id(text):
        raise ValueError(f"{setting} {text!r}: use lowercase letters, digits, '.' and '-' "
                         "(at most 63 characters)")
    return text


def hub_id_for(namespace: str, release: str = "", configured: str = "") -> str:
    """The hub id: the configured one, else ``<namespace>.<release>`` (``<namespace>`` alone
    without a release)."""
    hub = configured or (f"{namespace}.{release}" if release else namespace)
    hub = hub.lower()
    if not valid_hub_id(hub):
        raise ValueError(f"hub id {hub!r}: use lowercase letters, digits, '.' and '-' "
                         "(at most 63 characters)")
    return hub


def hub_server_value(key: str, hub_id: str = DEFAULT_HUB) -> str:
    """The ``aispike.io/hub-server`` value for server ``key`` (``user/server``) of ``hub_id``."""
    if not valid_hub_id(hub_id):
        raise ValueError(f"hub id {hub_id!r} is not valid")
    return f"{hub_id}:{key}" if hub_id else key


def split_hub_server(value: str) -> tuple[str, str]:
    """(hub id, ``user/server``) of an ``aispike.io/hub-server`` value; a value without a hub
    id belongs to the default hub (``""``)."""
    head, sep, rest = value.partition(":")
    if sep and "/" not in head and valid_hub_id(head) and "/" in rest:
        return head, rest
    return DEFAULT_HUB, value


def hub_id_from_env(environ: Mapping[str, str] | None = None) -> str:
    """This hub's id from the environment: ``$AISPIKE_HUB_ID``, else
    ``<$POD_NAMESPACE>.<$AISPIKE_HELM_RELEASE>`` when both are set, else ``""`` (the default
    hub).  Raises ``ValueError`` for an id that cannot be a label value (fail at start, not
    on the first claim)."""
    env = os.environ if environ is None else environ
    configured = env.get(HUB_ID_ENV, "").strip()
    namespace = env.get(NAMESPACE_ENV, "").strip()
    release = env.get(RELEASE_ENV, "").strip()
    if not configured and not (namespace and release):
        return DEFAULT_HUB
    return hub_id_for(namespace, release, configured)


def owns_unnamed_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``$AISPIKE_HUB_OWNS_UNNAMED`` says this hub owns values without a hub id
    (``true``/``1``/``yes``).  The default hub owns them anyway (:func:`belongs`)."""
    env = os.environ if environ is None else environ
    return env.get(OWNS_UNNAMED_ENV, "").strip().lower() in ("1", "true", "yes")


def belongs(value: str, hub_id: str, owns_unnamed: bool = False) -> bool:
    """Whether an object whose ``aispike.io/hub-server`` is ``value`` belongs to hub
    ``hub_id``.

    A value naming a hub belongs to that hub only.  A value without one (an object of a
    version before hub ids, or of the default hub; also an absent value, ``""``) belongs to
    the default hub, and to a hub that ``owns_unnamed`` (the one upgraded in place).
    """
    owner, _ = split_hub_server(value)
    if owner == hub_id:
        return True
    return owner == DEFAULT_HUB and owns_unnamed
