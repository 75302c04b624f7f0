// AISpike admin panel: draws what the service computed (api/panel/*). Plain JS, no framework.
(function () {
  "use strict";
  const root = document.getElementById("aispike-panel");
  if (!root) return;
  const prefix = root.dataset.prefix;
  const xsrf = (window.jhdata || {}).xsrf_token || "";

  function api(path, opts) {
    opts = opts || {};
    const headers = { "X-XSRFToken": xsrf, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(prefix + "api/" + path, {
      method: opts.method || "GET", headers: headers, credentials: "same-origin",
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (!r.ok) {
          const e = new Error(doc.error || r.statusText);
          e.field = doc.field; e.status = r.status;
          throw e;
        }
        return doc;
      });
    });
  }

  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), attrs[k]);
      else if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]);
    }
    for (let i = 2; i < arguments.length; i++) {
      const kid = arguments[i];
      if (kid === null || kid === undefined) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  function gib(mib) {
    const g = mib / 1024;
    return (Math.abs(g - Math.round(g)) < 0.05 ? Math.round(g) : g.toFixed(1)) + " GiB";
  }
  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.max(0, Math.round(s));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function hue(text) {
    let h = 7;
    for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) >>> 0;
    return h % 360;
  }
  function pct(x) { return (100 * x).toFixed(1) + " %"; }
  // A timestamp of the service (ISO 8601, UTC) in the browser's own zone and locale.
  function localTime(iso) {
    const t = Date.parse(iso);
    return isNaN(t) ? String(iso) : new Date(t).toLocaleString();
  }
  // The map's memory by state, in one order that adds up to the capacity.
  const TOTAL_PARTS = [["busy", "busy"], ["idle", "idle"], ["unknown", "no verdict"],
                       ["other", "other workloads"], ["free", "free"],
                       ["fragmented", "fragmented"]];
  function totalsText(t) {
    const parts = TOTAL_PARTS.filter(function (p) { return p[0] !== "other" || t.other; })
      .map(function (p) { return p[1] + " " + gib(t[p[0]] || 0); });
    return gib(t.total_mib) + " = " + parts.join(" + ");
  }
  function fillSelect(select, values, keep) {
    const current = keep || select.value;
    while (select.options.length > 1) select.remove(1);
    values.forEach(function (v) { select.add(new Option(v, v)); });
    select.value = values.indexOf(current) >= 0 ? current : "";
  }
  function showError(where, e) {
    where.replaceChildren(el("div", { cls: "alert alert-danger", text: e.message }));
  }

  // --- GPU map ----------------------------------------------------------------------------
  const STATES = ["busy", "idle", "unknown", "other", "fragmented", "free"];

  function mapPage() {
    const form = document.getElementById("map-filters");
    const map = document.getElementById("map");
    const tip = document.getElementById("map-tip");
    const keys = ["model", "pool", "node", "group", "user", "colour"];
    let offset = 0;
    // The service sends the first view inside the page (no second request to first paint).
    const inline = document.getElementById("map-initial");
    let initial = inline ? JSON.parse(inline.textContent) : null;
    if (inline) inline.remove();

    function filters() {
      const q = new URLSearchParams(location.search);
      const out = {};
      keys.forEach(function (k) { out[k] = q.get(k) || ""; });
      return out;
    }
    function go(changes) {
      const f = Object.assign(filters(), changes);
      const q = new URLSearchParams();
      keys.forEach(function (k) { if (f[k]) q.set(k, f[k]); });
      history.pushState(null, "", "?" + q.toString());
      offset = 0;
      load();
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const changes = {};
      keys.forEach(function (k) { changes[k] = form.elements[k].value.trim(); });
      go(changes);
    });
    document.getElementById("map-reset").addEventListener("click", function () {
      keys.forEach(function (k) { form.elements[k].value = ""; });
      form.elements.colour.value = "state";
      go({ model: "", pool: "", node: "", group: "", user: "", colour: "" });
    });
    window.addEventListener("popstate", load);
    map.addEventListener("mouseover", function (ev) {
      const seg = ev.target.closest(".seg");
      if (!seg) { tip.hidden = true; return; }
      // Tooltips are written when hovered, not for each of thousands of slices up front.
      tip.textContent = seg.tipOf ? seg.tipOf() : seg.dataset.tip;
      tip.hidden = false;
    });
    map.addEventListener("mousemove", function (ev) {
      tip.style.left = ev.pageX + 14 + "px";
      tip.style.top = ev.pageY + 14 + "px";
    });
    map.addEventListener("mouseleave", function () { tip.hidden = true; });

    function segment(width, cls, tipText, data, colour) {
      const s = el("div", { cls: "seg " + cls });
      if (typeof tipText === "function") s.tipOf = tipText;
      else s.dataset.tip = tipText;
      s.style.width = Math.max(0, width) + "%";
      for (const k in data || {}) s.dataset[k] = data[k];
      if (colour) s.style.background = colour;
      return s;
    }

    function stackedBar(t) {
      const bar = el("div", { cls: "bar" });
      STATES.forEach(function (s) {
        if (!t[s]) return;
        bar.append(segment(100 * t[s] / t.total_mib, "s-" + s,
          s + ": " + gib(t[s]) + " (" + pct(t[s] / t.total_mib) + ")", { state: s }));
      });
      return bar;
    }

    function drawPools(view) {
      const rows = view.pools.map(function (p) {
        const models = Object.keys(p.models).map(function (m) { return p.models[m] + "× " + m; });
        return el("div", { cls: "pool-row", "data-pool": p.pool, role: "button",
                           onclick: function () { go({ pool: p.pool }); } },
          el("div", { cls: "pool-name" }, el("strong", { text: p.pool }),
             el("div", { cls: "small text-muted",
                         text: p.nodes + " nodes · " + p.gpus + " GPUs · " + models.join(", ") })),
          el("div", { cls: "pool-bar" }, stackedBar(p)),
          el("div", { cls: "pool-stats small",
                      text: "allocated " + pct(p.allocation) + " · fragmented " +
                            gib(p.fragmented) }));
      });
      map.replaceChildren.apply(map, rows);
    }

    function gpuBar(node, g, byOwner) {
      const bar = el("div", { cls: "bar" });
      g.segments.forEach(function (s) {
        function text() {
          const who = s.user ? s.user + "/" + (s.server || "default") : "other workload";
          let t = who + " · " + gib(s.mib) + " of GPU " + g.index + " on " + node.name +
            " · " + s.state;
          if (s.user) {
            t += " · live " + gib(s.used_mib || 0) +
              (s.util === null || s.util === undefined ? "" : ", " + Math.round(s.util) + " % util");
            if (s.tier) t += " · tier " + s.tier;
            if (s.groups && s.groups.length) t += " · groups " + s.groups.join(", ");
            if (s.evidence && s.evidence.length) t += " · " + s.evidence.join("; ");
          }
          return t;
        }
        const colour = byOwner && s.user ? "hsl(" + hue(s.user) + ",60%,55%)" : null;
        bar.append(segment(100 * s.mib / g.memory_mib, "s-" + s.state, text,
          { user: s.user || "", server: s.server || "", state: s.state, mib: s.mib }, colour));
      });
      if (g.free_mib > 0) {
        const st = g.fragmented ? "fragmented" : "free";
        bar.append(segment(100 * g.free_mib / g.memory_mib, "s-" + st,
          gib(g.free_mib) + " " + st + " on GPU " + g.index + " of " + node.name,
          { state: st, mib: g.free_mib }));
      }
      const topo = [g.nvlink && "NVLink " + g.nvlink, g.pcie && "PCIe " + g.pcie,
                    g.numa >= 0 ? "NUMA " + g.numa : "", g.mig && "MIG " + g.mig]
        .filter(Boolean).join(" · ");
      return el("div", { cls: "gpu", "data-gpu": g.index,
                         title: "GPU " + g.index + " · " + g.model + " · " + gib(g.memory_mib) +
                                (topo ? " · " + topo : "") },
        el("span", { cls: "gpu-label", text: g.index }), bar);
    }

    function drawNodes(view, byOwner) {
      const rows = view.nodes.map(function (n) {
        const models = Array.from(new Set(n.gpus.map(function (g) { return g.model; })));
        const fragmented = n.gpus.reduce(function (sum, g) {
          return sum + (g.fragmented ? g.free_mib : 0); }, 0);
        const domains = [];
        n.gpus.forEach(function (g) {
          const key = g.nvlink || "";
          let d = domains.find(function (x) { return x.key === key; });
          if (!d) { d = { key: key, gpus: [] }; domains.push(d); }
          d.gpus.push(g);
        });
        const groups = domains.map(function (d) {
          return el("div", { cls: "nvl" + (d.key ? " linked" : ""),
                             title: d.key ? "NVLink domain " + d.key : "no NVLink" },
            d.key ? el("span", { cls: "nvl-label", text: d.key }) : null,
            ...d.gpus.map(function (g) { return gpuBar(n, g, byOwner); }));
        });
        return el("div", { cls: "node", "data-node": n.name },
          el("div", { cls: "node-head" }, el("strong", { text: n.name }),
             el("span", { cls: "small text-muted",
                          text: " " + models.join(", ") + " · " + n.gpus.length + " GPUs · " +
                                (n.cpu_milli / 1000) + " CPU · pool " + n.pool +
                                (fragmented > 0 ? " · fragmented " + gib(fragmented) : "") })),
          el("div", { cls: "node-gpus" }, ...groups));
      });
      if (view.matched_nodes > view.offset + view.nodes.length) {
        rows.push(el("button", { cls: "btn btn-sm btn-outline-secondary", type: "button",
          text: "Next " + view.limit + " of " + view.matched_nodes + " nodes",
          onclick: function () { offset = view.offset + view.limit; load(); } }));
      }
      if (view.offset > 0) {
        rows.unshift(el("button", { cls: "btn btn-sm btn-outline-secondary", type: "button",
          text: "Previous nodes",
          onclick: function () { offset = Math.max(0, view.offset - view.limit); load(); } }));
      }
      map.replaceChildren.apply(map, rows);
    }

    function load() {
      const f = filters();
      keys.forEach(function (k) { if (form.elements[k]) form.elements[k].value = f[k]; });
      if (!f.colour) form.elements.colour.value = "state";
      const q = new URLSearchParams();
      ["model", "pool", "node", "group", "user"].forEach(function (k) { if (f[k]) q.set(k, f[k]); });
      if (offset) q.set("offset", offset);
      const pre = initial && !offset && ["model", "pool", "node", "group", "user"].every(
        function (k) { return (initial.filter[k] || "") === (f[k] || ""); }) ? initial : null;
      initial = null;
      return (pre ? Promise.resolve(pre) : api("panel/map?" + q.toString())).then(function (view) {
        fillSelect(form.elements.model, view.models, f.model);
        fillSelect(form.elements.pool, view.pools_all, f.pool);
        fillSelect(form.elements.group, view.groups, f.group);
        const t = view.totals;
        document.getElementById("map-summary").replaceChildren(el("div", {},
          el("span", { id: "map-totals", text: t.nodes + (t.nodes === 1 ? " node · " : " nodes · ") +
            t.gpus + " GPUs · allocated " + pct(t.allocation) + " · " + totalsText(t) }),
          view.stale.length ? el("div", { cls: "text-warning", text: "Not drawn: " +
            view.stale.join("; ") }) : null));
        const crumbs = [el("a", { href: "#", text: "All pools", onclick: function (ev) {
          ev.preventDefault(); go({ pool: "", node: "" }); } })];
        if (f.pool) crumbs.push(" › ", el("strong", { text: f.pool }));
        document.getElementById("map-crumbs").replaceChildren(...crumbs);
        if (view.level === "pools") drawPools(view);
        else drawNodes(view, f.colour === "owner");
        root.dataset.loaded = view.level;
        if (window.performance && performance.mark) performance.mark("aispike-map-drawn");
      }).catch(function (e) { showError(map, e); });
    }
    load();
  }

  // --- quotas -----------------------------------------------------------------------------
  const RES_LABEL = { gpu_memory_mib: "GPU memory", gpus: "GPUs", cpu_milli: "CPU",
                      memory_mib: "RAM", servers: "Servers" };
  const RES_KEY = { gpu_memory_mib: "gpu_memory", gpus: "gpus", cpu_milli: "cpu",
                    memory_mib: "memory", servers: "servers" };
  function amount(res, v) {
    if (v === null || v === undefined) return "∞";
    if (res === "gpu_memory_mib" || res === "memory_mib") return gib(v);
    if (res === "cpu_milli") return (v / 1000).toString();
    return String(v);
  }

  function quotasPage() {
    const form = document.getElementById("quota-form");
    const status = document.getElementById("q-status");
    let data = null;

    function usageCell(res, r) {
      const limit = r.ceiling === null ? r.quota : r.ceiling;
      const share = limit ? Math.min(1, r.used / limit) : 0;
      const cls = r.ceiling !== null && r.used > r.ceiling ? "over"
        : (r.quota !== null && r.used > r.quota ? "borrowing" : "");
      const bar = el("div", { cls: "qbar " + cls }, el("div", { cls: "qfill" }));
      bar.firstChild.style.width = (100 * share) + "%";
      return el("td", { cls: "quota-cell " + cls, "data-res": res,
                        title: r.source ? "limit from " + r.source : "" },
        el("span", { text: amount(res, r.used) + " / " + amount(res, r.quota) +
                           (r.ceiling !== null && r.ceiling !== r.quota
                             ? " (+" + amount(res, r.ceiling - r.quota) + " borrowing)" : "") }),
        bar);
    }

    function table(id, rows, nameKey, extra) {
      const t = document.getElementById(id);
      const head = el("tr", {}, el("th", { text: nameKey === "user" ? "User" : "Group" }),
        el("th", { text: extra[0] }),
        ...data.resources.map(function (r) { return el("th", { text: RES_LABEL[r] }); }));
      t.tHead.replaceChildren(head);
      t.tBodies[0].replaceChildren(...rows.map(function (row) {
        const tr = el("tr", { "data-name": row[nameKey], role: "button",
                              cls: row.over.length ? "table-danger" : "",
                              onclick: function () { edit(nameKey + "s", row); } },
          el("td", { text: row[nameKey] }), el("td", { text: extra[1](row) }),
          ...data.resources.map(function (r) { return usageCell(r, row.resources[r]); }));
        return tr;
      }));
    }

    function edit(kind, row) {
      form.elements.kind.value = kind;
      form.elements.name.value = row.user || row.group;
      const entry = row.entry || {};
      Object.keys(RES_KEY).forEach(function (r) {
        const v = (entry.quota || {})[RES_KEY[r]];
        form.elements[RES_KEY[r]].value = v === undefined ? "" : v;
      });
      form.elements.tier.value = entry.tier || "";
      kindChanged();
    }

    function kindChanged() {
      const user = form.elements.kind.value === "users";
      document.getElementById("q-tier-row").hidden = !user;
    }
    form.elements.kind.addEventListener("change", kindChanged);

    function clearErrors() {
      form.querySelectorAll(".is-invalid").forEach(function (x) { x.classList.remove("is-invalid"); });
      status.replaceChildren();
    }

    function current(kind, name) {
      const rows = kind === "users" ? data.users : data.groups;
      const row = rows.find(function (r) { return (r.user || r.group) === name; });
      return row && row.entry ? JSON.parse(JSON.stringify(row.entry)) : {};
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearErrors();
      const kind = form.elements.kind.value;
      const name = form.elements.name.value.trim();
      if (!name) {
        form.elements.name.classList.add("is-invalid");
        status.replaceChildren(el("div", { cls: "text-danger", text: "name: give a user or group name" }));
        return;
      }
      const doc = current(kind, name);
      const quota = {};
      Object.values(RES_KEY).forEach(function (k) {
        const v = form.elements[k].value.trim();
        if (v === "") return;
        quota[k] = /^-?\d+$/.test(v) ? Number(v) : v;
      });
      if (Object.keys(quota).length) doc.quota = quota; else delete doc.quota;
      if (kind === "users") {
        const tier = form.elements.tier.value;
        if (tier) doc.tier = tier; else delete doc.tier;
      }
      api("policy/" + kind + "/" + encodeURIComponent(name), { method: "PUT", body: doc })
        .then(function (r) {
          status.replaceChildren(el("div", { cls: "text-success",
            text: "Saved " + kind.slice(0, -1) + " " + name + " (policy version " + r.version + ")" }));
          load();
        })
        .catch(function (e) {
          const field = (e.field || "").replace(kind + "." + name + ".", "");
          const input = form.querySelector('[data-field="' + field + '"]');
          if (input) {
            input.classList.add("is-invalid");
            input.parentElement.querySelector(".invalid-feedback").textContent = e.message;
          }
          status.replaceChildren(el("div", { cls: "text-danger", "data-field": e.field || "",
                                             text: e.message }));
        });
    });

    document.getElementById("q-delete").addEventListener("click", function () {
      clearErrors();
      const kind = form.elements.kind.value;
      const name = form.elements.name.value.trim();
      if (!name || !window.confirm("Delete the policy entry of " + kind.slice(0, -1) + " " + name + "?")) return;
      api("policy/" + kind + "/" + encodeURIComponent(name), { method: "DELETE" })
        .then(function () { status.replaceChildren(el("div", { cls: "text-success", text: "Deleted" })); load(); })
        .catch(function (e) { status.replaceChildren(el("div", { cls: "text-danger", text: e.message })); });
    });

    function load() {
      return api("panel/quotas").then(function (d) {
        data = d;
        fillSelect(form.elements.tier, d.tiers, form.elements.tier.value);
        form.elements.tier.options[0].text = "(default: " + d.default_tier + ")";
        table("quota-users", d.users, "user", ["Tier", function (r) { return r.tier; }]);
        table("quota-groups", d.groups, "group",
              ["Running", function (r) { return r.members_running.length + " users"; }]);
        root.dataset.loaded = "quotas";
      }).catch(function (e) { showError(status, e); });
    }
    form.elements.tier.add(new Option("", ""), 0);
    kindChanged();
    load();
  }

  // --- queue ------------------------------------------------------------------------------
  function queuePage() {
    const body = document.querySelector("#queue tbody");
    function asks(r) {
      const q = r.request || {};
      if (q.gpu_count === 0) return "CPU only";
      if (q.gpu_memory_mib) return gib(q.gpu_memory_mib) + " GPU slice";
      if (q.gpu_share_milli) return (q.gpu_share_milli / 10) + " % of a GPU";
      return (q.gpu_count || 1) + " whole GPU" + ((q.gpu_count || 1) > 1 ? "s" : "");
    }
    function load() {
      return api("panel/queue").then(function (d) {
        document.getElementById("queue-summary").textContent =
          d.length ? d.length + " spawns waiting" : "Nobody is waiting.";
        body.replaceChildren(...d.queued.map(function (r) {
          return el("tr", { "data-user": r.user, "data-server": r.server },
            el("td", { text: r.position }), el("td", { text: r.user }),
            el("td", { text: r.server || "default" }), el("td", { text: r.tier }),
            el("td", { text: asks(r) }), el("td", { text: duration(r.wait_seconds) }),
            el("td", { text: duration(r.gives_up_in_seconds) }),
            el("td", { cls: "reason", text: r.reasons.join("; ") }));
        }));
        reconciled(d.reconciled || {});
        root.dataset.loaded = "queue";
      }).catch(function (e) { showError(document.getElementById("queue-summary"), e); });
    }
    const what = { "reconcile.release": "ticket released", "reconcile.pod": "pod deleted",
                   "reconcile.claim": "claim deleted", "reconcile.unprotect": "finalizer removed" };
    function reconciled(r) {
      const t = r.totals || {}, last = r.last || {};
      document.getElementById("reconciled-summary").textContent =
        "Since the service started: " + (t.released || 0) + " tickets released, " +
        (t.pods_deleted || 0) + " pods deleted, " + (t.claims_deleted || 0) + " claims deleted, " + (t.unprotected || 0) +
        " finalizers removed" + (last.at ? "; last pass " + last.at + " (" + last.why + ")" : "") +
        (last.problem ? "; " + last.problem : "");
      document.querySelector("#reconciled tbody").replaceChildren(...(r.entries || []).map(
        function (e) {
          return el("tr", { "data-action": e.action },
            el("td", { text: e.at }), el("td", { text: what[e.action] || e.action }),
            el("td", { text: e.target }), el("td", { cls: "reason", text: e.detail.reason || "" }));
        }));
    }
    load();
    setInterval(load, 10000);
  }

  // --- idle -------------------------------------------------------------------------------
  function idlePage() {
    const body = document.querySelector("#idle tbody");
    const status = document.getElementById("idle-status");
    function act(r, action, cell) {
      const who = r.user + "/" + r.server;
      const label = r.user + "/" + (r.server || "default");
      const yes = el("button", { cls: "btn btn-sm btn-danger confirm", type: "button",
                                 text: "Confirm " + action + " of " + label });
      const no = el("button", { cls: "btn btn-sm btn-outline-secondary", type: "button", text: "Cancel" });
      const buttons = Array.from(cell.childNodes);
      no.addEventListener("click", function () { cell.replaceChildren(...buttons); });
      yes.addEventListener("click", function () {
        yes.disabled = true;
        api("panel/idle/" + encodeURIComponent(r.user) + "/" + encodeURIComponent(r.server) + "/" + action,
            { method: "POST", body: { confirm: who } })
          .then(function (res) {
            status.replaceChildren(el("div", { cls: "alert alert-success", text: res.message }));
            load();
          })
          .catch(function (e) { status.replaceChildren(el("div", { cls: "alert alert-danger", text: e.message })); });
      });
      cell.replaceChildren(yes, " ", no);
    }
    function load() {
      return api("idle/report").then(function (d) {
        const t = d.totals;
        document.getElementById("idle-summary").textContent = t.servers + " servers · " +
          t.reclaimable_servers + " reclaimable (" + gib(t.reclaimable_gpu_memory_mib) + ", " +
          t.wasted_gpu_hours.toFixed(2) + " GPU-hours wasted) · " + t.warned + " warned" +
          (d.stale ? " · the hub did not answer: " + d.hub.error : "") +
          (d.generated_at ? " · as of " + localTime(d.generated_at) : " · not polled yet");
        body.replaceChildren(...d.servers.map(function (r) {
          const cell = el("td", { cls: "actions" });
          cell.append(
            el("button", { cls: "btn btn-sm btn-outline-warning", type: "button", text: "Warn",
                           onclick: function () { act(r, "warn", cell); } }), " ",
            el("button", { cls: "btn btn-sm btn-outline-danger", type: "button", text: "Stop",
                           onclick: function () { act(r, "stop", cell); } }));
          return el("tr", { "data-user": r.user, "data-server": r.server,
                            cls: r.reclaimable ? "table-warning" : "" },
            el("td", { text: r.user }), el("td", { text: r.server || "default" }),
            el("td", { text: r.node }), el("td", { cls: "verdict", text: r.verdict }),
            el("td", { text: gib(r.gpu_memory_mib) }),
            el("td", { text: r.wasted_gpu_hours.toFixed(2) }),
            el("td", { cls: "small", text: r.evidence.join("; ") }),
            el("td", { text: r.mode + (r.exempt ? " (exempt)" : "") }), cell);
        }));
        root.dataset.loaded = "idle";
      }).catch(function (e) { showError(status, e); });
    }
    load();
  }

  // --- history ----------------------------------------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    return n;
  }
  function lineChart(box, points, series, yMaxFixed) {
    const W = 640, H = 200, L = 44, B = 22, T = 8, R = 8;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart-svg", role: "img" });
    if (points.length < 2) {
      // One point is no line: axis labels at a single instant would overlap.
      box.replaceChildren(el("p", { cls: "text-muted small chart-empty",
        text: "Not enough history yet: " + (points.length ? "one point" : "no point") +
              " in this window, and a chart needs two (a shorter window shows more)." }));
      return;
    }
    const t0 = Date.parse(points[0].at), t1 = Date.parse(points[points.length - 1].at);
    let yMax = yMaxFixed || 0;
    if (!yMaxFixed) points.forEach(function (p) { series.forEach(function (s) { yMax = Math.max(yMax, p[s.key]); }); });
    yMax = yMax || 1;
    const x = function (t) { return L + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - L - R); };
    const y = function (v) { return H - B - (v / yMax) * (H - B - T); };
    chart.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    [[0, "0"], [yMax, yMaxFixed === 1 ? "100 %" : yMax.toFixed(yMax < 10 ? 1 : 0)]].forEach(function (tk) {
      const lab = svg("text", { x: L - 4, y: y(tk[0]) + 4, "text-anchor": "end", class: "tick" });
      lab.textContent = tk[1];
      chart.append(lab);
    });
    [[t0, "start"], [t1, "end"]].forEach(function (tk) {
      const lab = svg("text", { x: x(tk[0]), y: H - 6, "text-anchor": tk[1], class: "tick" });
      lab.textContent = new Date(tk[0]).toLocaleString();
      chart.append(lab);
    });
    series.forEach(function (s) {
      const d = points.map(function (p) { return x(Date.parse(p.at)).toFixed(1) + "," + y(p[s.key]).toFixed(1); });
      chart.append(svg("polyline", { points: d.join(" "), class: "line " + s.cls, "data-series": s.key }));
    });
    const legend = el("div", { cls: "small" }, ...series.map(function (s) {
      return el("span", { cls: "me-3" }, el("span", { cls: "legend l-" + s.cls }), s.label);
    }));
    box.replaceChildren(chart, legend);
  }

  function historyPage() {
    const sel = document.getElementById("h-hours");
    function load() {
      return api("panel/history?hours=" + sel.value).then(function (d) {
        const h = d.gpu_hours;
        const note = document.getElementById("history-note");
        note.textContent = d.note || "";
        note.hidden = !d.note;
        root.dataset.source = d.source || "history";
        document.getElementById("history-hours").replaceChildren(
          el("strong", { text: "GPU-hours in this window: " }),
          el("span", { id: "gpu-hours", text: "held " + h.held.toFixed(1) + " · busy " + h.busy.toFixed(1) +
            " · idle " + h.idle.toFixed(1) + " · no verdict " + h.unknown.toFixed(1) +
            " (" + d.samples + " samples from " +
            (d.source === "prometheus" ? "Prometheus" : "the service's history") +
            (d.sampling ? "" : "; sampling is off") + ")" }));
        lineChart(document.getElementById("chart-allocation"), d.points,
                  [{ key: "allocation", label: "allocated share of GPU memory", cls: "c1" }], 1);
        lineChart(document.getElementById("chart-fragmentation"), d.points,
                  [{ key: "fragmented_gpus", label: "fragmented GPUs", cls: "c3" },
                   { key: "free_gpus", label: "free GPUs", cls: "c4" }]);
        lineChart(document.getElementById("chart-held"), d.points,
                  [{ key: "busy_gpus", label: "busy", cls: "c1" },
                   { key: "idle_gpus", label: "idle", cls: "c2" },
                   { key: "unknown_gpus", label: "no verdict", cls: "c4" }]);
        lineChart(document.getElementById("chart-queue"), d.points,
                  [{ key: "queued", label: "waiting spawns", cls: "c3" }]);
        root.dataset.loaded = "history";
      }).catch(function (e) { showError(document.getElementById("history-hours"), e); });
    }
    sel.addEventListener("change", load);
    load();
  }

  const pages = { map: mapPage, quotas: quotasPage, queue: queuePage, idle: idlePage,
                  history: historyPage };
  (pages[root.dataset.page] || function () {})();
})();
