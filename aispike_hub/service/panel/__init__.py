"""The admin panel: pages and JSON served by the AISpike service, for AISpike admins only.

Pages (under the service's prefix, e.g. ``/services/aispike/``), each extending the hub's own
``page.html`` and using the hub's CSS and scripts through the hub's static URL, so they look
like the hub's pages and keep its navigation bar (the service appears in its Services menu):

| page | what |
|---|---|
| ``admin/`` | GPU map: node pools, then nodes and GPUs as bars of slices; filters |
| ``admin/quotas`` | per user and group: limit vs use; editing through the policy API |
| ``admin/queue`` | waiting spawns: position, reason, wait |
| ``admin/idle`` | the idle monitor's report; warn and stop (with a confirmation) |
| ``admin/history`` | allocation, fragmentation, GPU-hours busy and idle over time |

The same data as JSON (``custom:aispike:admin``; the idle report also ``custom:aispike:idle``):
``api/panel/map``, ``api/panel/quotas``, ``api/panel/queue``, ``api/panel/history``,
``api/idle/report`` (the idle monitor's own API) and
``POST api/panel/idle/<user>/<server>/<warn|stop>``.
Policy edits use the existing ``api/policy/...`` endpoints.  ``metrics`` serves the panel's
gauges (allocation, fragmentation, GPUs held by state, queue) for Prometheus; with
``AdminPanel.prometheus_url`` set, the history charts come from Prometheus (:mod:`..prometheus`),
else (or when it does not answer) from the service's own samples (:mod:`..history`).

Speed on large clusters: the map is built once per change of the slices, nodes or policy
(parsed reservations are reused across builds), views only sum per-node aggregates, the map
page carries its first view inline (one request to first paint), JSON and pages are gzipped,
and static files (the hub's and the panel's) carry a content hash so browsers cache them.

Everything is computed on the service side from what the service already holds: the
controller's inventory and admitted reservations (:mod:`..admission`), the idle monitor's
verdicts (:mod:`..idle`), the quota core's limits (:mod:`aispike_hub.quota`) and the placement
core's fragmentation; the browser only draws.

Modules: :mod:`.views` (the data: map, quotas, queue, idle actions, history and charts),
:mod:`.pages` (the :class:`AdminPanel` settings, rendering, static files, compression),
:mod:`.handlers` (tornado handlers and :func:`panel_handlers`).  The old names are re-exported
here.
"""

from __future__ import annotations

from aispike_hub.service.panel.handlers import (
    HistoryHandler,
    IdleActionHandler,
    MapHandler,
    MetricsHandler,
    PageHandler,
    PanelAPIHandler,
    PanelQueueHandler,
    QuotasHandler,
    RootHandler,
    panel_handlers,
)
from aispike_hub.service.panel.pages import (
    GZIP_MIN_BYTES,
    HERE,
    MAP_FILTERS,
    PAGES,
    AdminPanel,
    finish_compressed,
    hub_static_dir,
    hub_templates_dir,
    script_json,
    static_version,
)
from aispike_hub.service.panel.views import PanelViews, ViewSettings

__all__ = [
    "GZIP_MIN_BYTES", "HERE", "MAP_FILTERS", "PAGES", "AdminPanel", "HistoryHandler",
    "IdleActionHandler", "MapHandler", "MetricsHandler", "PageHandler", "PanelAPIHandler",
    "PanelQueueHandler", "PanelViews", "QuotasHandler", "RootHandler", "ViewSettings",
    "finish_compressed", "hub_static_dir", "hub_templates_dir", "panel_handlers", "script_json",
    "static_version",
]
