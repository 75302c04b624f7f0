"""Admission: who may start a server, when, and where (quota, queue, preemption).

One component, run two ways: in the AISpike service behind its REST API
(:mod:`aispike_hub.service.api`, reached by :class:`~aispike_hub.admission.client.AdmissionClient`)
or inside the hub (:class:`~aispike_hub.admission.inprocess.InProcessAdmission`).  Both adapters
satisfy :class:`~aispike_hub.admission.protocol.Admission` and run the same
:class:`~aispike_hub.admission.controller.AdmissionController`.

Modules (import them directly; this package imports nothing, so the pure codec in
:mod:`~aispike_hub.admission.wire` stays cheap for :mod:`aispike_hub.kube.claims`):

- :mod:`~aispike_hub.admission.controller`: admit, queue, preemption planning, release, fit;
- :mod:`~aispike_hub.admission.wire`: requests, assignments and tickets as JSON (one codec);
- :mod:`~aispike_hub.admission.inventory`: where the controller learns the cluster;
- :mod:`~aispike_hub.admission.protocol`: the :class:`Admission` protocol;
- :mod:`~aispike_hub.admission.client`: the REST adapter (the AISpike service);
- :mod:`~aispike_hub.admission.inprocess`: the in-process adapter (inside the hub);
- :mod:`~aispike_hub.admission.hub`: what spawners do with either (start, form cap, preview).

The spawner and the service reach each other only through this package.
"""
