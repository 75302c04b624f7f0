"""The hub's side of admission, whichever adapter answers: starting, the form, the preview.

Both AISpike spawners (Kubernetes and local) start a server, cap the options form by the
user's quota and offer the live fit preview the same way, through the functions here, over any
:class:`~aispike_hub.admission.protocol.Admission` (the REST client of the AISpike service or the
in-process adapter): one rule for both spawners, one place to change it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.protocol import Admission
from aispike_hub.model import GIB_IN_MIB, SliceRequest
from aispike_hub.spawner.form import FormError, FormSettings, Options, parse_options, to_request

__all__ = [
    "PREVIEW_IN_PROCESS",
    "PREVIEW_NO_TOKEN",
    "PREVIEW_OFF",
    "FitPreview",
    "admit_or_raise",
    "fit_preview",
    "form_choice_within_quota",
    "progress_message",
]


async def form_choice_within_quota(
    admission: Admission, user: str, groups: Iterable[str], user_options: dict[str, Any] | None,
    settings: FormSettings, log: logging.Logger,
) -> tuple[FormSettings, Options, int | None, bool]:
    """What the options form proposes, with its GPU-memory limit capped by the user's quota.

    Returns the settings (``max_gpu_gib`` lowered to the quota), the proposed choices (the
    user's last options if they are valid, else the defaults, brought under the cap), the quota
    in GiB (None: unknown or unlimited) and whether admission answered.  One rule for both
    spawners; when admission is unreachable the form still works and the start is checked
    anyway.
    """
    try:
        chosen = parse_options(user_options or {}, settings)
    except FormError:
        chosen = settings.defaults()
    try:
        fit = await admission.fit(user, list(groups), to_request(chosen, settings))
    except Exception as e:
        log.warning("quota for %s's form is unavailable: %s", user, e)
        return settings, chosen, None, False
    quota = (fit.get("limits") or {}).get("gpu_memory_mib")
    if not isinstance(quota, int):
        return settings, chosen, None, True
    quota_gib = quota // GIB_IN_MIB
    settings = replace(settings, max_gpu_gib=min(settings.max_gpu_gib, quota_gib))
    if chosen.gpu_gib > settings.max_gpu_gib:
        chosen = replace(chosen, gpu_gib=max(settings.max_gpu_gib, 1))
    return settings, chosen, quota_gib, True


async def admit_or_raise(admission: Admission, user: str, server: str, groups: Iterable[str],
                         request: SliceRequest, what: str,
                         say: Callable[[str], None]) -> dict[str, Any]:
    """Ask ``admission`` for a start and follow it while queued; the admitted ticket.

    Every spawner (Kubernetes or local) starts this way: a refusal, a queue that gave up or an
    admission that cannot be reached is a ``SpawnException`` with the reasons, before anything
    runs.  ``what`` describes the request ("8 GiB on any GPU, ..."); ``say`` gets each progress
    message for the spawn page.
    """
    from jupyterhub.spawner import SpawnException
    from tornado import httpclient

    from aispike_hub.admission.client import AdmissionError

    say(f"Asking for {what}")
    try:
        ticket = first = await admission.admit(user, server, list(groups), request)
        async for ticket in admission.follow(first):
            if ticket["state"] == "queued":
                say(progress_message(ticket))
    except AdmissionError as e:
        raise SpawnException(f"Admission failed: {e.message}", reason="admission",
                             status_code=400 if e.status < 500 else 503) from None
    except (OSError, httpclient.HTTPClientError) as e:
        raise SpawnException(
            "The AISpike service that admits servers is not answering; try again in a "
            "minute or ask an admin", reason="admission", status_code=503,
            log_message=f"admission unreachable: {e}") from None
    if ticket["state"] != "admitted":
        reasons = "; ".join(ticket.get("reasons") or []) or ticket["state"]
        refused = ticket["state"] == "refused"
        raise SpawnException(f"Cannot start {what}: {reasons}",
                             reason="quota" if refused else "queue",
                             status_code=403 if refused else 503)
    say(progress_message(ticket))
    return ticket


@dataclass(frozen=True)
class FitPreview:
    """How the options form previews a fit as the user types: the service's ``api/fit`` URL
    and a token to call it with, or (``absent``) why there is no live preview."""

    url: str = ""
    token: str = ""
    absent: str = ""


PREVIEW_OFF = "The live fit preview is off; your choice is checked when you start."
PREVIEW_IN_PROCESS = (
    "No live fit preview: this hub admits servers itself, without the AISpike service that "
    "answers the preview; your choice is checked against your quota and the free GPUs when "
    "you start.")
PREVIEW_NO_TOKEN = "No live fit preview right now; your choice is checked when you start."


TOKEN_ATTRIBUTE = "_aispike_fit_token"
"""Where the user object keeps its fit-preview token: ``(service, token, expires_at)``."""


def fit_preview(spawner: Any) -> FitPreview:
    """The form's live fit preview for ``spawner`` (either AISpike spawner), one rule for both.

    With the AISpike service as admission (``admission_class`` an :class:`AdmissionClient`) and
    ``fit_preview_service`` set: the service's ``api/fit`` URL on the hub's public address and a
    token of the user, living ``fit_token_seconds`` and limited to that service (plus
    reading the user's own groups, so the preview sees group quotas; without that scope
    when the user may not have it).  One token per user and service, kept on the hub's user
    object and reused until less than a third of its life is left (or the hub no longer
    knows it), so rendering the form does not pile tokens up in the hub's database.
    In-process admission has no API the browser could ask: the form then says so instead
    of pretending.
    """
    service = spawner.fit_preview_service
    if not service:
        return FitPreview(absent=PREVIEW_OFF)
    if not issubclass(spawner.admission_class, AdmissionClient):
        return FitPreview(absent=PREVIEW_IN_PROCESS)
    root = spawner.hub.base_url.rstrip("/").removesuffix("hub")
    url = f"{root.rstrip('/')}/services/{service}/api/fit"
    user = spawner.user
    lifetime = max(int(spawner.fit_token_seconds), 1)
    kept = _kept_token(user, service, lifetime)
    if kept:
        return FitPreview(url, kept)
    scopes = [f"access:services!service={service}"]
    note = "aispike options form: fit preview"
    error: Exception | None = None
    for wanted in ([*scopes, f"read:users:groups!user={user.name}"], scopes):
        try:
            token = str(user.new_api_token(note=note, expires_in=lifetime, scopes=wanted))
        except Exception as e:
            error = e
            continue
        with contextlib.suppress(Exception):  # a user object that takes no attributes
            setattr(user, TOKEN_ATTRIBUTE, (service, token, time.time() + lifetime))
        return FitPreview(url, token)
    spawner.log.warning("no fit preview for %s: %s", user.name, error)
    return FitPreview(absent=PREVIEW_NO_TOKEN)


def _kept_token(user: Any, service: str, lifetime: int) -> str:
    """The user's fit-preview token if it is for ``service``, has more than a third of
    ``lifetime`` left and the hub still knows it; else ""."""
    kept = getattr(user, TOKEN_ATTRIBUTE, None)
    if not isinstance(kept, tuple) or len(kept) != 3 or kept[0] != service:
        return ""
    _, token, expires_at = kept
    if expires_at - time.time() < lifetime / 3:
        return ""
    db = getattr(user, "db", None)
    if db is not None:
        try:
            from jupyterhub import orm

            if orm.APIToken.find(db, token) is None:  # revoked, or the hub's database is new
                return ""
        except Exception:
            return ""
    return str(token)


def progress_message(ticket: dict[str, Any]) -> str:
    """A spawn progress line for a ticket ("Waiting in the queue: position 2 of 5: ...")."""
    reasons = "; ".join(ticket.get("reasons") or [])
    state = ticket["state"]
    if state == "queued":
        return (f"Waiting in the queue: position {ticket['position']} of "
                f"{ticket['queue_length']} (tier {ticket['tier']}): {reasons}")
    if state == "admitted":
        where = (ticket.get("assignment") or {}).get("node", "")
        return f"Admitted{f' on {where}' if where else ''}" + (f": {reasons}" if reasons else "")
    return f"Not started: {reasons}" if reasons else f"Not started ({state})"
