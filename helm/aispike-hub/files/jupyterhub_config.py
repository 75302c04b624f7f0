# jupyterhub_config.py of the aispike-hub Helm chart. Do not edit in the pod: everything here
# comes from the chart's values (rendered into values.json beside this file) and the Secret's
# environment variables. Admins change values (hub.config, hub.extraConfig), not this file.
import json
import os
from pathlib import Path

from traitlets.config import Config

c = get_config()  # noqa: F821
HERE = Path(__file__).parent
chart = json.loads((HERE / "values.json").read_text())

# Traitlets config computed by the chart, then hub.config on top (both plain JSON).
c.merge(Config(chart["computed"]))
c.merge(Config(chart["hubConfig"]))

# The AISpike service is an external JupyterHub service (its own Deployment); the shared token
# comes from the chart's Secret, never from a ConfigMap.
# The pages of the admin panel log in through the hub (OAuth): the panel's token carries the
# admin scopes of those who have them (the aispike-admins role), never more.
service_token = os.environ["AISPIKE_SERVICE_TOKEN"]
c.JupyterHub.services = [
    *[s for s in c.JupyterHub.get("services", []) if s.get("name") != "aispike"],
    *[s for s in chart["services"] if s.get("name") != "aispike"],
    {
        "name": "aispike",
        "url": chart["serviceUrl"],
        "api_token": service_token,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": ["custom:aispike:admin", "custom:aispike:idle"],
    },
]
c.AdmissionClient.api_token = service_token

# Notebook servers ask the service for their user's quota and idle state (the lab extension's
# server extension, aispike_hub.serverext): where it is, by Service name (also from other
# namespaces), and a server token that may call it.  What the admin set wins.
environment: dict = {}
for section in ("Spawner", "KubeSpawner", "AISpikeSpawner"):
    environment.update(c[section].get("environment", {}) if section in c else {})
environment.setdefault("AISPIKE_SERVICE_URL", chart["notebookServiceUrl"])
c.AISpikeSpawner.environment = environment
if not any("server_token_scopes" in c[s] for s in ("Spawner", "KubeSpawner", "AISpikeSpawner")
           if s in c):
    c.AISpikeSpawner.server_token_scopes = [
        "users:activity!user", "access:servers!server", "access:services!service=aispike"]

# This hub's id on its claims and pods (docs/operations.md, "Hub identity"): the chart's
# aispike.hubId, else <namespace>.<release>; the service reads the same from AISPIKE_HUB_ID.
# What the admin set wins.
if "hub_id" not in c.AISpikeSpawner:
    c.AISpikeSpawner.hub_id = chart["hubId"]
if "hub_owns_unnamed" not in c.AISpikeSpawner:
    c.AISpikeSpawner.hub_owns_unnamed = chart["hubOwnsUnnamed"]

# Roles: the admin's (hub.loadRoles, hub.config) first; then the chart's, unless the admin named
# one the same. Hub admins (Authenticator.admin_users) use the admin panel: they join the
# aispike-admins role. An admin's own `user` role keeps notebooks' access to the AISpike service
# (the lab extension reads quota and notices there): the chart adds that scope to it.
roles = [*c.JupyterHub.get("load_roles", []), *chart["adminRoles"]]
named = {r["name"] for r in roles}
admin_users = sorted(c.Authenticator.get("admin_users", set()))
for role in chart["roles"]:
    if role["name"] == "aispike-admins":
        role = {**role, "users": sorted({*role.get("users", []), *admin_users})}
    if role["name"] not in named:
        roles.append(role)
for role in roles:
    if role["name"] == "user" and "access:services!service=aispike" not in role.get("scopes", []):
        role["scopes"] = [*role.get("scopes", ["self"]), "access:services!service=aispike"]
c.JupyterHub.load_roles = roles

# The database: a sqlite file on the hub's volume, in memory, or a URL from the values.
db = chart["db"]
if db["type"] == "sqlite-pvc":
    c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
elif db["type"] == "sqlite-memory":
    c.JupyterHub.db_url = "sqlite://"
else:
    c.JupyterHub.db_url = db["url"]

# hub.extraConfig, in name order, last (like Zero to JupyterHub).
for path in sorted(HERE.glob("extra-*.py")):
    exec(compile(path.read_text(), str(path), "exec"))  # noqa: S102 (admin-provided config)
