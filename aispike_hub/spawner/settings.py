"""Settings of the options form and of admission that every AISpike spawner shares.

The Kubernetes and the local spawner offer the same form and ask the same admission service;
their limits are declared once here (a traitlets mixin), so ``c.AISpikeSpawner.cpu_max`` and
``c.LocalGPUSpawner.cpu_max`` mean the same thing and cannot drift apart.
"""

from __future__ import annotations

from traitlets import Bool, Float, Integer, Type, Unicode
from traitlets.config import Configurable

from aispike_hub.admission.client import AdmissionClient


class SpawnerFormSettings(Configurable):
    """Limits and defaults of the options form, and who admits a start."""

    max_gpus = Integer(8, help="Most GPUs one server may ask for (more than one: whole GPUs).").tag(
        config=True)
    max_gpu_gib = Integer(
        None, allow_none=True,
        help="Largest GPU-memory slice in GiB (default: the largest GPU that can host it).",
    ).tag(config=True)
    default_gpu_gib = Integer(8, help="GPU memory (GiB) the form proposes.").tag(config=True)
    allow_cpu_only = Bool(True, help="Offer servers without a GPU.").tag(config=True)
    cpu_min = Float(0.5, help="Fewest CPUs a user may ask for.").tag(config=True)
    cpu_max = Float(16.0, help="Most CPUs a user may ask for.").tag(config=True)
    cpu_default = Float(2.0, help="CPUs the form proposes.").tag(config=True)
    memory_gib_min = Integer(1, help="Least RAM (GiB) a user may ask for.").tag(config=True)
    memory_gib_max = Integer(128, help="Most RAM (GiB) a user may ask for.").tag(config=True)
    memory_gib_default = Integer(8, help="RAM (GiB) the form proposes.").tag(config=True)

    admission_class = Type(
        AdmissionClient, klass=object,
        help="""Who admits a start (quota, queue): aispike_hub.admission.client.AdmissionClient
        (the AISpike service; configure c.AdmissionClient.url and .api_token) or
        aispike_hub.admission.inprocess.InProcessAdmission (inside the hub; configure
        c.InProcessAdmission.policy). Both answer the same calls.""",
    ).tag(config=True)

    fit_preview_service = Unicode(
        "aispike",
        help="""Name of the hub service whose api/fit the form's script calls as the user
        (with a short-lived token limited to that service). Empty: no live preview.""",
    ).tag(config=True)
    fit_token_seconds = Integer(
        1800, help="Lifetime of the token the form's script uses for the fit preview.",
    ).tag(config=True)
