"""The options form as a model: what a user may choose, parsing, validation, rendering.

Parsing is separate from rendering and from the spawner, so the same rules check a submitted
form, a ``POST /hub/api/users/<name>/servers/<server>`` body (``user_options``) and the
``opt-`` query arguments of a spawn URL.  Everything arriving here is untrusted:

- values arrive as form lists of strings (``{"gpu_gib": ["8"]}``), as plain strings (query
  arguments) or as JSON types (REST); all three parse to the same :class:`Options`;
- an unknown option, a value out of range, an image or dataset the admin did not list, a control
  character or an over-long string is refused with a :class:`FormError` naming each field, so
  nothing a user typed ever reaches a pod spec unchecked: the pod is built from the admin's
  :class:`ImageOption` / :class:`DatasetOption` entries, looked up by name.

No I/O here: :class:`FormSettings` (what the cluster and the admin allow) is given by the
spawner.  :func:`render_form` renders ``templates/options_form.html`` (Jinja2, autoescaped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aispike_hub.model import GIB_IN_MIB, SliceRequest

ANY_MODEL = "any"
"""The ``gpu_model`` value that lets placement pick any GPU model."""

FIELDS = ("image", "gpu_model", "gpu_gib", "gpu_count", "cpu", "memory_gib", "datasets")
"""Every option the form and the REST API accept (``user_options`` keys)."""

IGNORED_FORM_FIELDS = ("_xsrf",)
"""Form fields the hub's page adds that are not options."""

MAX_TEXT = 256
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SERVER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FormError(ValueError):
    """One or more options are not acceptable; ``errors`` is ``[(field, message), ...]``."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{f}: {m}" for f, m in self.errors))

    @property
    def fields(self) -> list[str]:
        return [f for f, _ in self.errors]


@dataclass(frozen=True, slots=True)
class ImageOption:
    """An image the admin offers: a short name (what users pick) and the image reference."""

    name: str
    image: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class DatasetOption:
    """A dataset the admin offers, mounted read-only (by default) at ``mount_path``.

    ``volume`` is a Kubernetes volume source without a name, e.g.
    ``{"persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}}``.
    """

    name: str
    mount_path: str
    volume: Mapping[str, Any]
    description: str = ""
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class FormSettings:
    """What a user may choose; built by the spawner from its config and the cluster."""

    images: tuple[ImageOption, ...]
    datasets: tuple[DatasetOption, ...] = ()
    gpu_models: tuple[str, ...] = ()
    """Models this cluster has (the form's choices besides "any")."""
    model_max_gib: Mapping[str, int] = field(default_factory=dict)
    """Largest GPU of each model, in whole GiB (caps the slice when that model is chosen)."""
    max_gpu_gib: int = 80
    """Largest slice anyone may ask for: the largest GPU (and the user's quota, when known)."""
    max_gpus: int = 8
    default_gpu_gib: int = 8
    min_gpu_gib: int = 1
    """Smallest slice (a profile may raise it)."""
    default_gpu_count: int | None = None
    """GPUs a start gets when the user does not say (None: a slice when the cluster has
    GPUs; the Kubernetes spawner passes 0 for a plain KubeSpawner config)."""
    cpu_min: Decimal = Decimal("0.5")
    cpu_max: Decimal = Decimal(16)
    cpu_default: Decimal = Decimal(2)
    memory_gib_min: int = 1
    memory_gib_max: int = 128
    memory_gib_default: int = 8
    allow_cpu_only: bool = True

    def image(self, name: str) -> ImageOption:
        for option in self.images:
            if option.name == name:
                return option
        raise KeyError(name)

    def dataset(self, name: str) -> DatasetOption:
        for option in self.datasets:
            if option.name == name:
                return option
        raise KeyError(name)

    @property
    def offers_gpus(self) -> bool:
        return self.max_gpu_gib > 0 and self.max_gpus >= 1

    def defaults(self) -> Options:
        count = 1 if self.offers_gpus else 0
        if self.default_gpu_count is not None and self.offers_gpus:
            count = max(0, min(self.default_gpu_count, self.max_gpus))
        if count == 0 and not self.allow_cpu_only and self.offers_gpus:
            count = 1
        gib = max(min(self.default_gpu_gib, self.max_gpu_gib), min(self.min_gpu_gib,
                                                                   self.max_gpu_gib))
        return Options(
            image=self.images[0].name if self.images else "",
            gpu_model=ANY_MODEL,
            gpu_gib=gib if count == 1 else 0,
            gpu_count=count,
            cpu_milli=int(self.cpu_default * 1000),
            memory_gib=self.memory_gib_default,
            datasets=(),
        )


@dataclass(frozen=True, slots=True)
class Options:
    """A user's valid choices.  ``gpu_count`` 0 is CPU-only, 1 a slice of ``gpu_gib``, more
    than 1 whole GPUs (then ``gpu_gib`` is 0)."""

    image: str
    gpu_model: str
    gpu_gib: int
    gpu_count: int
    cpu_milli: int
    memory_gib: int
    datasets: tuple[str, ...] = ()

    def as_user_options(self) -> dict[str, Any]:
        """JSON form, as stored in ``user_options`` (parses back to the same options)."""
        cpu = Decimal(self.cpu_milli) / 1000
        return {
            "image": self.image,
            "gpu_model": self.gpu_model,
            "gpu_gib": self.gpu_gib,
            "gpu_count": self.gpu_count,
            "cpu": int(cpu) if cpu == cpu.to_integral_value() else float(cpu),
            "memory_gib": self.memory_gib,
            "datasets": list(self.datasets),
        }

    def describe(self) -> str:
        """One line for the spawn page: "8 GiB on any GPU, 2 CPUs, 8 GiB RAM"."""
        model = "any GPU" if self.gpu_model == ANY_MODEL else f"a {self.gpu_model}"
        if self.gpu_count == 0:
            gpu = "no GPU"
        elif self.gpu_count == 1 and self.gpu_gib:
            gpu = f"{self.gpu_gib} GiB on {model}"
        else:
            gpu = f"{self.gpu_count} whole GPU{'s' if self.gpu_count > 1 else ''} ({model})"
        cpus = Decimal(self.cpu_milli) / 1000
        return f"{gpu}, {cpus.normalize():f} CPU{'s' if cpus != 1 else ''}, " \
               f"{self.memory_gib} GiB RAM"


# --- parsing ------------------------------------------------------------------------------------


def _scalar(raw: Mapping[str, Any], key: str, errors: list[tuple[str, str]]) -> Any:
    """One value: a form's one-element list, a query string or a JSON scalar; None if absent."""
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, list | tuple):
        if len(value) != 1:
            errors.append((key, f"expected one value, got {len(value)}"))
            return None
        value = value[0]
    if isinstance(value, bytes):
        errors.append((key, "expected text, got bytes"))
        return None
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        errors.append((key, f"expected a value, got {type(value).__name__}"))
        return None
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            errors.append((key, f"too long ({len(value)} characters; at most {MAX_TEXT})"))
            return None
        if _CONTROL.search(value):
            errors.append((key, "contains control characters"))
            return None
        value = value.strip()
    return value


def _whole(raw: Mapping[str, Any], key: str, lo: int, hi: int, default: int,
           errors: list[tuple[str, str]], unit: str = "") -> int:
    value = _scalar(raw, key, errors)
    if value is None or value == "":
        return default
    if isinstance(value, float):
        if not value.is_integer():
            errors.append((key, f"expected a whole number, got {value!r}"))
            return default
        value = int(value)
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,6}", value):
            errors.append((key, f"expected a whole number, got {value[:40]!r}"))
            return default
        value = int(value)
    if not lo <= value <= hi:
        errors.append((key, f"{value}{unit} is out of range: choose {lo}{unit} to {hi}{unit}"))
        return default
    return int(value)


def _cores(raw: Mapping[str, Any], settings: FormSettings,
           errors: list[tuple[str, str]]) -> int:
    value = _scalar(raw, "cpu", errors)
    if value is None or value == "":
        return int(settings.cpu_default * 1000)
    try:
        cores = Decimal(str(value)) if not isinstance(value, float) else Decimal(repr(value))
    except InvalidOperation:
        errors.append(("cpu", f"expected a number of CPUs, got {str(value)[:40]!r}"))
        return 0
    if not cores.is_finite() or cores.adjusted() > 6 or (  # 1e999999 would overflow below
            cores * 10 != (cores * 10).to_integral_value()):
        errors.append(("cpu", f"expected CPUs in steps of 0.1, got {str(value)[:40]!r}"))
        return 0
    if not settings.cpu_min <= cores <= settings.cpu_max:
        errors.append(("cpu", f"{cores.normalize():f} CPUs is out of range: choose "
                              f"{settings.cpu_min.normalize():f} to "
                              f"{settings.cpu_max.normalize():f}"))
        return 0
    return int(cores * 1000)


def _names(raw: Mapping[str, Any], key: str, errors: list[tuple[str, str]]) -> list[str]:
    """A list of names: a form's list, a comma-separated query string, or a JSON list."""
    if key not in raw:
        return []
    value = raw[key]
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or len(value) > 64:
        errors.append((key, "expected a list of names (at most 64)"))
        return []
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _NAME.match(item.strip()):
            errors.append((key, f"{str(item)[:40]!r} is not a name"))
            return []
        out.append(item.strip())
    if len(set(out)) != len(out):
        errors.append((key, "lists a name twice"))
        return []
    return out


def parse_options(raw: Mapping[str, Any] | None, settings: FormSettings) -> Options:
    """Validated :class:`Options` from untrusted input; raises :class:`FormError`.

    Missing options take their defaults (``{}`` starts the default server as configured).
    """
    if raw is not None and not isinstance(raw, Mapping):
        raise FormError([("user_options", "expected a mapping of options")])
    raw = {k: v for k, v in (raw or {}).items() if k not in IGNORED_FORM_FIELDS}
    errors: list[tuple[str, str]] = []
    unknown = sorted(str(k)[:40] for k in raw if k not in FIELDS)
    if unknown:
        errors.append((unknown[0], f"unknown option; known options: {', '.join(FIELDS)}"))
    defaults = settings.defaults()

    image = _scalar(raw, "image", errors)
    if image is None or image == "":
        image = defaults.image
    elif not isinstance(image, str) or image not in {i.name for i in settings.images}:
        errors.append(("image", f"{str(image)[:40]!r} is not offered; choose one of "
                                f"{', '.join(i.name for i in settings.images)}"))
        image = defaults.image

    model = _scalar(raw, "gpu_model", errors)
    if model is None or model == "":
        model = ANY_MODEL
    elif model != ANY_MODEL and model not in settings.gpu_models:
        have = ", ".join(settings.gpu_models) or "none"
        errors.append(("gpu_model", f"{str(model)[:40]!r} is not a GPU model of this cluster "
                                    f"(it has: {have}); or choose {ANY_MODEL!r}"))
        model = ANY_MODEL

    lowest = 0 if settings.allow_cpu_only else 1
    gib_given = raw.get("gpu_gib") not in (None, "", [""], 0, "0", ["0"])
    # Asking for GPU memory without a count asks for one slice.
    implied = 1 if gib_given and raw.get("gpu_count") in (None, "", [""]) else \
        defaults.gpu_count
    count = _whole(raw, "gpu_count", lowest, max(settings.max_gpus, lowest), implied, errors)
    if count > settings.max_gpus:  # asked for by giving GPU memory alone
        errors.append(("gpu_gib", "no GPU is offered here"))
        count = defaults.gpu_count
    cap = settings.max_gpu_gib
    if model != ANY_MODEL and model in settings.model_max_gib:
        cap = min(cap, settings.model_max_gib[model])
    if count == 1:
        low = max(1, min(settings.min_gpu_gib, cap))
        gib = _whole(raw, "gpu_gib", low, max(cap, 1),
                     max(min(defaults.gpu_gib or settings.default_gpu_gib, cap), low),
                     errors, " GiB")
        if cap < 1:
            errors.append(("gpu_gib", "no GPU is available to you"))
    else:
        gib = 0
        if gib_given and count > 1:
            errors.append(("gpu_gib", "a server with more than one GPU takes whole GPUs; "
                                      "leave GPU memory out"))
        elif gib_given:
            errors.append(("gpu_gib", "a server without a GPU has no GPU memory"))
    if count == 0 and model != ANY_MODEL:
        errors.append(("gpu_model", "a server without a GPU has no GPU model"))

    cpu_milli = _cores(raw, settings, errors)
    memory = _whole(raw, "memory_gib", settings.memory_gib_min, settings.memory_gib_max,
                    settings.memory_gib_default, errors, " GiB")
    datasets = _names(raw, "datasets", errors)
    offered = {d.name for d in settings.datasets}
    for name in datasets:
        if name not in offered:
            errors.append(("datasets", f"{name!r} is not offered; choose from "
                                       f"{', '.join(sorted(offered)) or '(none)'}"))
            break
    if errors:
        raise FormError(errors)
    return Options(str(image), str(model), gib, count, cpu_milli, memory, tuple(datasets))


_WHOLE_FIELDS = ("gpu_gib", "gpu_count", "memory_gib")


def _typed(key: str, values: Sequence[Any]) -> Any:
    """One form field as a ``user_options`` value: numbers as numbers when they read as such,
    ``datasets`` as a list; anything odd is kept as sent, for :func:`parse_options` to refuse
    with the field named."""
    if key == "datasets":
        return [v for v in values if v != ""]
    if len(values) != 1:
        return list(values)
    value = values[0]
    if isinstance(value, str):
        text = value.strip()
        if key in _WHOLE_FIELDS and re.fullmatch(r"[0-9]{1,6}", text):
            return int(text)
        if key == "cpu" and re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", text):
            number = Decimal(text)
            return int(number) if number == number.to_integral_value() else float(number)
    return value


def options_from_formdata(formdata: Mapping[str, Sequence[Any]],
                          prefix: str = "profile-option-") -> dict[str, Any]:
    """KubeSpawner's ``options_from_form`` with AISpike's fields typed (pure, synchronous).

    ``{"profile": ["gpu"], "profile-option-gpu--gpu_gib": ["8"], ...}`` becomes
    ``{"profile": "gpu", "gpu_gib": 8, ...}`` (KubeSpawner's shape: only the chosen profile's
    fields, prefix removed); without a profile the AISpike fields are taken as they are named.
    Empty fields are left out (the default applies); ``_xsrf`` is dropped; other fields are
    kept so that validation (``apply_user_options``) refuses them by name.  Nothing is
    validated here: the same rules then check form, REST and query options alike.
    """
    def first(values: Any) -> Any:
        return values[0] if isinstance(values, list | tuple) and values else values

    out: dict[str, Any] = {}
    slug = first(formdata.get("profile", [None]))
    for key, values in formdata.items():
        seq = list(values) if isinstance(values, list | tuple) else [values]
        if key in IGNORED_FORM_FIELDS or key == "profile":
            continue
        if key.startswith(prefix):
            if not slug or not key.startswith(f"{prefix}{slug}--"):
                continue  # another profile's fields
            key = key[len(f"{prefix}{slug}--"):]
        if key in FIELDS:
            if all(v == "" for v in seq):
                continue
            out[key] = _typed(key, seq)
        elif seq:
            out[key] = seq[0] if len(seq) == 1 else seq
    if slug:
        out = {"profile": slug, **out}
    return out


def check_server_name(name: str) -> str:
    """A named server's name, if usable in pod and claim names; raises :class:`FormError`."""
    if name and not _SERVER_NAME.match(name):
        raise FormError([("server_name", f"{name[:40]!r} is not a valid server name: use "
                                         "lowercase letters, digits and '-' (at most 63)")])
    return name


def to_request(options: Options, settings: FormSettings) -> SliceRequest:
    """The placement and quota request for ``options`` (image by reference, not by name)."""
    return SliceRequest(
        gpu_count=options.gpu_count,
        gpu_memory_mib=options.gpu_gib * GIB_IN_MIB if options.gpu_count == 1 else 0,
        allowed_models=frozenset() if options.gpu_model == ANY_MODEL
        else frozenset({options.gpu_model}),
        cpu_milli=options.cpu_milli,
        memory_mib=options.memory_gib * GIB_IN_MIB,
        image=settings.image(options.image).image if options.image else "",
        datasets=options.datasets,
    )


def settings_from_config(
    images: Iterable[Mapping[str, Any]],
    datasets: Mapping[str, Mapping[str, Any]],
    gpu_sizes_mib: Mapping[str, int],
    **limits: Any,
) -> FormSettings:
    """Build :class:`FormSettings` from the spawner's traits and the cluster's GPU models.

    ``gpu_sizes_mib`` maps each GPU model of the cluster to its largest GPU's memory.
    Raises ``ValueError`` (naming the setting) on a bad admin entry.
    """
    image_options = []
    for i, entry in enumerate(images):
        name, ref = entry.get("name"), entry.get("image")
        if not isinstance(name, str) or not _NAME.match(name) or not isinstance(ref, str) \
                or not ref:
            raise ValueError(f"AISpikeSpawner.images[{i}]: needs a name ([A-Za-z0-9_.-]) "
                             f"and an image, got {dict(entry)!r}")
        image_options.append(ImageOption(name, ref, str(entry.get("description", ""))))
    dataset_options = []
    for name, entry in sorted(datasets.items()):
        if not _NAME.match(name) or not isinstance(entry.get("volume"), Mapping) \
                or not str(entry.get("mount_path", "")).startswith("/"):
            raise ValueError(f"AISpikeSpawner.datasets[{name!r}]: needs a volume (a volume "
                             "source mapping) and an absolute mount_path")
        dataset_options.append(DatasetOption(
            name, str(entry["mount_path"]), dict(entry["volume"]),
            str(entry.get("description", "")), bool(entry.get("read_only", True))))
    allowed = limits.pop("gpu_models", None) or ()
    model_max = {m: mib // GIB_IN_MIB for m, mib in gpu_sizes_mib.items()
                 if not allowed or m in allowed}
    largest = max(model_max.values(), default=0)
    cap = limits.pop("max_gpu_gib", None)
    return FormSettings(
        images=tuple(image_options),
        datasets=tuple(dataset_options),
        gpu_models=tuple(sorted(model_max)),
        model_max_gib=model_max,
        max_gpu_gib=largest if cap is None else min(largest, cap),
        **limits,
    )


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileView:
    """One profile of ``profile_list`` as the form shows it: KubeSpawner's profile card (name,
    description, its ``profile_options``) with AISpike's fields inside, bounded by what the
    profile allows (``settings``)."""

    slug: str
    display_name: str
    description: str
    settings: FormSettings
    chosen: Options
    checked: bool = False
    options: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """``(name, option)``: the profile option with ``chosen`` and ``unlisted_value`` added."""
    fields: tuple[str, ...] = FIELDS
    """The AISpike fields offered inside this profile."""
    notes: tuple[str, ...] = ()
    """The bounds the admin set (CPU, RAM), in words."""


def _block_config(settings: FormSettings, chosen: Options) -> dict[str, Any]:
    return {
        "modelMaxGib": dict(settings.model_max_gib),
        "maxGpuGib": settings.max_gpu_gib,
        "images": {i.name: i.image for i in settings.images},
        "image": chosen.image,
        "defaultCount": chosen.gpu_count,
        "defaultGib": chosen.gpu_gib,
        "cpu": float(Decimal(chosen.cpu_milli) / 1000),
        "memoryGib": chosen.memory_gib,
    }


def _cpu_text(options: Options) -> str:
    return f"{(Decimal(options.cpu_milli) / 1000).normalize():f}"


def render_form(
    settings: FormSettings,
    *,
    chosen: Options | None = None,
    fit_url: str = "",
    fit_token: str = "",
    fit_absent: str = "",
    server_name: str = "",
    note: str = "",
    quota_gib: int | None = None,
    profiles: Sequence[ProfileView] = (),
    notes: Sequence[str] = (),
) -> str:
    """HTML of the options form (a fragment the hub puts inside its spawn page).

    ``fit_url`` and ``fit_token`` let the form's script ask the fit-preview API as the user
    types; without them (or when it does not answer) the form is a plain form, and
    ``fit_absent`` says why there is no live preview (:func:`aispike_hub.admission.hub.
    fit_preview` decides both for every spawner).  With ``profiles`` (KubeSpawner's
    ``profile_list``) the form is KubeSpawner's list of profiles, a radio button named
    ``profile`` each, with AISpike's fields inside each profile named
    ``profile-option-<slug>--<field>``; ``notes`` state the admin's bounds.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("aispike_hub.spawner", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    chosen = chosen or settings.defaults()
    blocks = {"aispike": _block_config(settings, chosen)}
    views = []
    for i, view in enumerate(profiles):
        block = f"aispike-p{i + 1}"
        blocks[block] = _block_config(view.settings, view.chosen)
        views.append({"block": block, "slug": view.slug, "display_name": view.display_name,
                      "description": view.description, "checked": view.checked,
                      "options": view.options, "settings": view.settings,
                      "chosen": view.chosen, "fields": view.fields, "notes": view.notes,
                      "cpu_value": _cpu_text(view.chosen)})
    config = {
        "fitUrl": fit_url,
        "token": fit_token,
        "fitAbsent": fit_absent,
        "anyModel": ANY_MODEL,
        "debounceMs": 300,
        "blocks": blocks,
    }
    return env.get_template("options_form.html").render(
        s=settings,
        o=chosen,
        any_model=ANY_MODEL,
        all_fields=FIELDS,
        cpu_value=_cpu_text(chosen),
        server_name=server_name,
        note=note,
        notes=list(notes),
        profiles=views,
        fit_absent=fit_absent if not (fit_url and fit_token) else "",
        quota_gib=quota_gib,
        # JSON inside <script>: escape "<" so no value can close the script element.
        config_json=json.dumps(config).replace("<", "\\u003c"),
    )
