"""Options of :class:`aispike_hub.spawner.kube.AISpikeSpawner`: profiles, the form, the bounds.

Why its own module: ``AISpikeSpawner`` is a drop-in for KubeSpawner, so everything KubeSpawner
does with ``user_options`` must keep its meaning here (``profile_list`` with
``kubespawner_override`` and ``profile_options``, ``options_from_form`` of shape
``(formdata) -> dict``, ``load_user_options``) while AISpike's own fields (GPU slice, CPU, RAM,
image, datasets) are offered inside each profile.  The pure rules are
:mod:`aispike_hub.spawner.profiles` and :mod:`aispike_hub.spawner.form`; this mixin applies
them to the spawner.

The order of application, once per start (``apply_user_options``; with JupyterHub < 5.3 at the
start of ``start``), is one rule:

1. the configured values (``c.AISpikeSpawner.*``, after JupyterHub's ``group_overrides``) are
   restored: nothing of a previous start's profile or options remains;
2. the chosen profile's ``kubespawner_override``, then each of its ``profile_options``' chosen
   (or default) choice's ``kubespawner_override`` (KubeSpawner's order and merge rules);
3. the AISpike options are validated against what the spawner now allows (a profile may fix
   the backend, the GPU models, the slice range, the image, or forbid GPUs);
4. the pod gets the slice's resources and placement, and CPU/RAM by
   :func:`aispike_hub.spawner.profiles.resources_for` (the admin's limit and guarantee are
   bounds, an overcommit ratio is kept, a request never exceeds its limit).

KubeSpawner's own ``_start`` calls ``load_user_options()`` again: here that does nothing once
the options were applied for this start, so no profile override lands after step 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import math
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from jupyterhub.spawner import SpawnException
from kubespawner import KubeSpawner
from traitlets import Float, Integer, List, Unicode, default

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.hub import fit_preview, form_choice_within_quota
from aispike_hub.contract import ENV_SERVICE_URL
from aispike_hub.model import SliceRequest
from aispike_hub.spawner.form import (
    FIELDS,
    FormError,
    FormSettings,
    Options,
    ProfileView,
    check_server_name,
    options_from_formdata,
    parse_options,
    render_form,
    settings_from_config,
    to_request,
)
from aispike_hub.spawner.profiles import (
    FORM_KEYS,
    UNLISTED_SUFFIX,
    Resource,
    bound_notes,
    bounds_of,
    check_choices,
    merge_overrides,
    profile_fields,
    profile_overrides,
    resources_for,
    select_profile,
    split_options,
)

RESTORED = ("image", "cpu_limit", "cpu_guarantee", "mem_limit", "mem_guarantee",
            "extra_resource_limits", "extra_resource_guarantees", "volumes", "volume_mounts",
            "node_affinity_required", "node_affinity_preferred", "priority_class_name",
            "extra_annotations", "extra_labels", "environment")
"""Traits a start sets from the options; each start begins again from the configured values
(and so do the traits a profile overrides)."""

CLUSTER_UNREACHABLE = ("The cluster's GPUs could not be read just now, so the form offers no "
                       "GPU; try again in a moment.")


def _options_from_form(formdata: dict[str, Any]) -> dict[str, Any]:
    """KubeSpawner's ``options_from_form`` shape: ``(formdata) -> dict``, synchronous."""
    return options_from_formdata(formdata)


class InvalidOptions(SpawnException, ValueError):  # type: ignore[misc]
    """Bad server options: a 400 naming the field for the hub, and the ValueError that
    KubeSpawner's ``load_user_options`` raises for them (code written for KubeSpawner catches
    that)."""

    def __init__(self, message: str, *, reason: str, status_code: int = 400) -> None:
        SpawnException.__init__(self, message, reason=reason, status_code=status_code)


async def _apply_user_options(spawner: Any, user_options: dict[str, Any]) -> None:
    await spawner.apply_options(user_options)


async def _render(spawner: Any) -> str:
    return str(await spawner.render_options_form())


class KubeOptionsMixin(KubeSpawner):  # type: ignore[misc]
    """Profiles, options and the form of ``AISpikeSpawner`` (see the module docstring)."""

    min_gpu_gib = Integer(
        1, help="""Smallest GPU-memory slice (GiB) a user may ask for; a profile may raise it
        (kubespawner_override {"min_gpu_gib": 16}).""",
    ).tag(config=True)
    gpu_models = List(
        Unicode(), default_value=[],
        help="""GPU models users may choose (label values, e.g. NVIDIA-A100-SXM4-80GB);
        empty: every model of the cluster. A profile may fix one (kubespawner_override
        {"gpu_models": ["NVIDIA-A100-SXM4-80GB"]}).""",
    ).tag(config=True)
    default_gpu_count = Integer(
        None, allow_none=True,
        help="""GPUs a server gets when the user does not say (0: none, 1: a slice of
        default_gpu_gib). Default: a slice when AISpike's own form is configured (images,
        datasets, backend or default_gpu_gib set for AISpikeSpawner), else none, so a plain
        KubeSpawner config gets no GPU unless a user asks.""",
    ).tag(config=True)
    form_cluster_timeout = Float(
        1.5, help="""Seconds the options form waits for the cluster's GPUs and the quota
        before it renders without them (and says so).""",
    ).tag(config=True)

    _options: Options | None = None
    _base: dict[str, Any] | None = None
    _profiled: dict[str, Any] | None = None
    _given: frozenset[str] = frozenset()
    _applied_from: Any = None
    """The user_options the current ``_options`` were made from (load_user_options compares)."""

    @default("options_form")
    def _default_options_form(self) -> Any:
        return _render

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return _options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _apply_user_options

    @default("admission_class")
    def _default_admission_class(self) -> Any:
        """The AISpike service when one is configured, else admission inside the hub."""
        section = self.config.get("AdmissionClient") or {}
        if "url" in section or os.environ.get(ENV_SERVICE_URL):
            return AdmissionClient
        from aispike_hub.admission.inprocess import InProcessAdmission

        self.log.info("no AISpike service configured (c.AdmissionClient.url): admission "
                      "runs in-process")
        return InProcessAdmission

    @default("default_gpu_count")
    def _default_gpu_count_default(self) -> int | None:
        section = self.config.get("AISpikeSpawner") or {}
        ours = {"images", "datasets", "backend", "default_gpu_gib", "max_gpu_gib", "max_gpus"}
        return None if ours & set(section) else 0

    # -- who and what ----------------------------------------------------------------------------
    def group_names(self) -> list[str]:
        """The user's groups (KubeSpawner's tests use users without ``groups``: none then)."""
        groups = getattr(self.user, "groups", None)
        try:
            items = list(groups or [])
        except TypeError:  # a stand-in user whose ``groups`` is not a list of groups
            return []
        return [str(getattr(g, "name", g)) for g in items]

    async def profiles(self) -> list[dict[str, Any]]:
        """``profile_list`` initialized as KubeSpawner does (slugs, defaults); callables
        called with the spawner (and awaited)."""
        raw: Any = self._sorted_dict_values(self.profile_list)
        if callable(raw):
            raw = raw(self)
            if inspect.isawaitable(raw):
                raw = await raw
        return list(self._get_initialized_profile_list(list(raw or [])))

    def configured(self, name: str) -> Any:
        """A setting as configured (a copy), not as the last start left it."""
        if self._base is not None and name in self._base:
            return copy.deepcopy(self._base[name])
        return getattr(self, name)

    async def _evaluated(self, override: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in override.items():
            if key in FORM_KEYS and callable(value):
                value = value(self)
                if inspect.isawaitable(value):
                    value = await value
            if key in FORM_KEYS and self.has_trait(key) and not isinstance(value, dict):
                # as setattr would: "32G" becomes bytes, 4 becomes 4.0
                with contextlib.suppress(Exception):
                    value = self.traits()[key].validate(self, value)
            out[key] = value
        return out

    # -- settings and bounds ---------------------------------------------------------------------
    async def gpu_sizes(self, backend: str, timeout: float | None = None
                        ) -> dict[str, int] | None:
        """Largest GPU (MiB) of each model as ``backend`` sees the cluster; None when it could
        not be read within ``timeout`` seconds (None: wait as long as it takes)."""
        try:
            call = self.cluster_nodes(backend)
            nodes = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except Exception as e:
            if timeout is None:
                raise
            self.log.warning("the options form renders without the cluster's GPUs: %s",
                             e or type(e).__name__)
            return None
        sizes: dict[str, int] = {}
        for node in nodes:
            for gpu in node.gpus:
                sizes[gpu.model] = max(sizes.get(gpu.model, 0), gpu.memory_mib)
        return sizes

    def settings_for(self, values: Mapping[str, Any], sizes: Mapping[str, int]) -> FormSettings:
        """What the form offers under ``values`` (the spawner's settings after a profile's
        overrides): the admin's ranges, capped by ``cpu_limit`` and ``mem_limit``."""
        image = values.get("image") or self.image
        images = values.get("images") or [{"name": "default", "image": str(image)}]
        cpu = bounds_of(values["cpu_min"], values["cpu_max"], values["cpu_default"],
                        values.get("cpu_limit"))
        limit = values.get("mem_limit")
        mem = bounds_of(values["memory_gib_min"], values["memory_gib_max"],
                        values["memory_gib_default"],
                        limit / (1 << 30) if limit else None)
        high = max(1, math.floor(mem.high))
        low = max(1, min(math.ceil(mem.low), high))
        return settings_from_config(
            images, values.get("datasets") or {}, sizes,
            max_gpu_gib=values.get("max_gpu_gib"), max_gpus=values["max_gpus"],
            default_gpu_gib=values["default_gpu_gib"], allow_cpu_only=values["allow_cpu_only"],
            min_gpu_gib=values.get("min_gpu_gib") or 1,
            default_gpu_count=values.get("default_gpu_count"),
            gpu_models=tuple(values.get("gpu_models") or ()),
            cpu_min=_tenths(cpu.low), cpu_max=_tenths(cpu.high),
            cpu_default=_tenths(cpu.default), memory_gib_min=low, memory_gib_max=high,
            memory_gib_default=max(low, min(math.floor(mem.default), high)),
        )

    def current_values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FORM_KEYS}

    async def form_settings(self) -> FormSettings:
        """What the form offers now (after this start's profile), with the cluster's GPUs."""
        values = self.current_values()
        sizes = await self.gpu_sizes(values["backend"])
        return self.settings_for(values, sizes or {})

    # -- applying options ------------------------------------------------------------------------
    def _restore_base(self, more: tuple[str, ...] = ()) -> None:
        """Every start begins from the configured values (``RESTORED`` and whatever a profile
        overrides); the first start records them."""
        if self._base is None:
            self._base = {}
        for name in (*RESTORED, *more):
            if name not in self._base and self.has_trait(name):
                self._base[name] = copy.deepcopy(getattr(self, name))
        for name, value in self._base.items():
            setattr(self, name, copy.deepcopy(value))

    async def apply_options(self, user_options: Any) -> None:
        """Validate ``user_options`` however they came (form, REST, query) and apply the
        chosen profile: an HTTP 400 naming the field if bad (see the module docstring)."""
        try:
            await self._apply(user_options)
        except FormError as e:
            raise InvalidOptions(f"Invalid server options: {e}", reason="options",
                                 status_code=400) from None

    async def _apply(self, user_options: Any) -> None:
        if user_options is not None and not isinstance(user_options, Mapping):
            raise FormError([("user_options", "expected a mapping of options")])
        raw = dict(user_options or {})
        self._applied_from = copy.deepcopy(raw)
        check_server_name(self.name or "")
        profile = select_profile(await self.profiles(), raw.get("profile"))
        if profile is None and raw.get("profile"):
            self.log.warning("%s: profile %r requested, but no profile_list is configured",
                             self._log_name, raw["profile"])
        ours, rest = split_options(raw, profile)
        overrides = []
        if profile is not None:
            check_choices(profile, ours)
            overrides = profile_overrides(profile, ours)
        self._restore_base(tuple(k for o in overrides for k in o))
        for override in overrides:
            for key, value in override.items():
                if isinstance(value, dict) and isinstance(getattr(self, key, None), dict):
                    setattr(self, key, copy.deepcopy(getattr(self, key)))  # never the config's
            self._apply_overrides(override)
        settings = await self.form_settings()
        self._options = parse_options(rest, settings)
        self._given = frozenset(k for k, v in rest.items() if v not in (None, "", [""]))
        self._profiled = {name: copy.deepcopy(getattr(self, name)) for name in RESTORED}

    async def load_user_options(self) -> None:
        """KubeSpawner's hook, called again by its ``_start``: a no-op once these very options
        were applied (a profile override must not land after the slice's resources); otherwise
        (called on its own, or with other user_options) it applies them."""
        if self._options is None or dict(self.user_options or {}) != self._applied_from:
            await self.apply_options(self.user_options)

    async def options_from_query(self, query_data: dict[str, Any]) -> dict[str, Any]:
        """``/hub/spawn/<user>/<server>?gpu_gib=8`` (or ``opt-`` arguments, or ``profile=``
        with ``profile-option-<slug>--<option>``): the form's rules, a bad value re-shows the
        form with the field named."""
        options = options_from_formdata(query_data)
        await self.apply_options(options)
        return options

    def resource_plan(self, options: Options) -> tuple[Resource, Resource]:
        """CPU (cores) and RAM (bytes) of the pod: the user's choice within the admin's
        bounds (:func:`aispike_hub.spawner.profiles.resources_for`)."""
        base = self._profiled or {name: getattr(self, name) for name in RESTORED}
        cpu_choice = options.cpu_milli / 1000 if "cpu" in self._given else None
        mem_choice = options.memory_gib * (1 << 30) if "memory_gib" in self._given else None
        cpu = resources_for(cpu_choice, base["cpu_limit"], base["cpu_guarantee"],
                            options.cpu_milli / 1000)
        mem = resources_for(mem_choice, base["mem_limit"], base["mem_guarantee"],
                            options.memory_gib * (1 << 30))
        return cpu, mem

    def request_for(self, options: Options, settings: FormSettings) -> SliceRequest:
        """The admission and placement request: the slice, and CPU/RAM as the pod gets them."""
        from dataclasses import replace

        cpu, mem = self.resource_plan(options)
        return replace(to_request(options, settings),
                       cpu_milli=max(1, math.ceil(cpu.amount * 1000)),
                       memory_mib=max(1, math.ceil(mem.amount / (1 << 20))))

    # -- the form --------------------------------------------------------------------------------
    async def render_options_form(self) -> str:
        """The AISpike form, with KubeSpawner's profiles when ``profile_list`` is set; within
        ``form_cluster_timeout`` seconds whatever the cluster and the service do."""
        values = {k: self.configured(k) for k in FORM_KEYS}
        profiles = await self.profiles()
        timeout = self.form_cluster_timeout
        backends = {values["backend"]}
        evaluated: list[list[dict[str, Any]]] = []
        for profile in profiles:
            overrides = [await self._evaluated(o) for o in profile_overrides(profile, {})]
            evaluated.append(overrides)
            backend = merge_overrides(values, overrides).get("backend")
            backends.add(str(backend))
        sizes: dict[str, dict[str, int] | None] = {}
        for backend in sorted(backends):
            sizes[backend] = await self.gpu_sizes(backend, timeout)
        unreachable = any(s is None for s in sizes.values())
        settings = self.settings_for(values, sizes[values["backend"]] or {})
        saved = dict(self.user_options or {})
        try:
            settings, chosen, quota_gib, answered = await asyncio.wait_for(
                form_choice_within_quota(self.admission, self.user.name, self.group_names(),
                                         {k: v for k, v in saved.items() if k in FIELDS},
                                         settings, self.log), timeout)
        except TimeoutError:
            chosen, quota_gib, answered = settings.defaults(), None, False
        notes = [CLUSTER_UNREACHABLE] if unreachable else []
        if not answered:
            notes.append("Quota information is unavailable right now.")
        views = []
        for profile, overrides in zip(profiles, evaluated, strict=True):
            views.append(self._profile_view(profile, overrides, values, sizes, saved,
                                            quota_gib))
        if views and not any(v.checked for v in views):
            views[0] = _checked(views[0])
        preview = fit_preview(self)
        return render_form(settings, chosen=chosen, fit_url=preview.url, fit_token=preview.token,
                           fit_absent=preview.absent, server_name=self.name or "",
                           note=" ".join(notes), quota_gib=quota_gib, profiles=views,
                           notes=bound_notes(values))

    def _profile_view(self, profile: Mapping[str, Any], overrides: list[dict[str, Any]],
                      values: Mapping[str, Any], sizes: Mapping[str, dict[str, int] | None],
                      saved: Mapping[str, Any], quota_gib: int | None) -> ProfileView:
        from dataclasses import replace

        mine = merge_overrides(values, overrides)
        settings = self.settings_for(mine, sizes.get(str(mine["backend"])) or {})
        if quota_gib is not None:
            settings = replace(settings, max_gpu_gib=min(settings.max_gpu_gib, quota_gib))
        slug = str(profile["slug"])
        chosen_here = saved.get("profile") == slug
        _, rest = split_options(saved if chosen_here else {}, profile)
        try:
            if chosen_here:
                check_choices(profile, saved)
            chosen = parse_options(rest, settings)
        except FormError:
            chosen_here, chosen = False, settings.defaults()
        options = []
        for name, option in (profile.get("profile_options") or {}).items():
            choices = option.get("choices") or {}
            pick = saved.get(name) if chosen_here else None
            if pick not in choices:
                pick = next((k for k, c in choices.items() if c.get("default")), None)
            unlisted = saved.get(f"{name}{UNLISTED_SUFFIX}") if chosen_here else None
            options.append((str(name), {**option, "chosen": pick,
                                        "unlisted_value": unlisted or ""}))
        checked = chosen_here or (not saved.get("profile") and bool(profile.get("default")))
        return ProfileView(slug, str(profile.get("display_name") or slug),
                           str(profile.get("description") or ""), settings, chosen,
                           checked=checked, options=tuple(options),
                           fields=profile_fields(profile), notes=tuple(bound_notes(mine)))


def _checked(view: ProfileView) -> ProfileView:
    from dataclasses import replace

    return replace(view, checked=True)


def _tenths(value: float) -> Decimal:
    """A CPU amount in the form's steps of 0.1 (rounded down, at least 0.1)."""
    return max(Decimal(math.floor(value * 10)) / 10, Decimal("0.1"))
