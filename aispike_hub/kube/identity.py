"""Which hub an object belongs to: hub identity in ``aispike.io/hub-server`` (pure).

Two hubs may share a cluster.  Each names itself with a hub id (its namespace and Helm release,
``<namespace>.<release>``, or a configured ``hub_id``); the value of ``aispike.io/hub-server``
on its claims and pods is then ``<hub id>:<user>/<server>``, and its claims carry the label
``aispike.io/hub: <hub id>``.  A value without a hub id (``<user>/<server>``, every object written
before hub ids) belongs to the default hub, whose id is ``""``.  Each hub's inventory counts its
own servers per server and every other hub's as taken (another workload).
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_HUB", "hub_id_for", "hub_server_value", "split_hub_server", "valid_hub_id"]

DEFAULT_HUB = ""
"""The hub id of objects written without one (and of a hub that sets none)."""

_HUB_ID = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


def valid_hub_id(hub_id: str) -> bool:
    """True for ``""`` (the default hub) and DNS-label-like ids (lowercase, digits, ``.-``)."""
    return hub_id == DEFAULT_HUB or bool(_HUB_ID.match(hub_id))


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
