// The operator console: plain DOM, no framework, no build step. Everything that comes from
// the API (and so from CRMs, adapters, tenants and chats) reaches the page only as text:
// `el` sets textContent and attributes, never innerHTML, and links are built only to this
// console's own routes. It calls only endpoints of /openapi.json.

const TOKEN = "crm-console-token";
const main = document.getElementById("main");

// ----- DOM -------------------------------------------------------------------------------

/** An element; `props`: class, text, value, checked, style (an object), href (console routes only), on* handlers, other attributes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k === "value") node.value = v;
    else if (k === "checked") node.checked = !!v;
    else if (k === "href") node.setAttribute("href", route(v));
    else if (k === "style") Object.assign(node.style, v); // CSSOM: the CSP allows no style attributes
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Only `#/...` links: nothing from the API can become a javascript: or outside URL. */
function route(path) {
  return "#/" + String(path).replace(/^#?\/*/, "");
}

const seg = (s) => encodeURIComponent(String(s));
const pretty = (v) => el("pre", { text: typeof v === "string" ? v : JSON.stringify(v, null, 2) });

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

/** What the last action did, shown once at the top of the next page. */
let flash = null;

function show(...nodes) {
  const note = flash ? el("div", { class: "notice", id: "flash", role: "status", text: flash }) : null;
  flash = null;
  main.replaceChildren(...[note, ...nodes].flat());
}

function problem(e) {
  return el("div", { class: "error", role: "alert", text: e instanceof Error ? e.message : String(e) });
}

// ----- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e ? `${status} ${e.kind}: ${e.message}` : `${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body, contentType = "application/json") {
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(TOKEN) || "") };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  const resp = await fetch(path, { method, headers, body: payload });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    if (resp.status === 401) signOut();
    throw new ApiError(resp.status, data);
  }
  return data;
}

// ----- sign-in -----------------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem(TOKEN);
  document.getElementById("nav").hidden = true;
  signIn();
}

function signIn(message) {
  const token = el("input", { type: "password", id: "token", autocomplete: "off" });
  const form = el("form", { id: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN, token.value.trim());
    try {
      await api("GET", "/v1/overview");
      document.getElementById("nav").hidden = false;
      render();
    } catch (e) {
      sessionStorage.removeItem(TOKEN);
      signIn(e.message);
    }
  } }, el("label", { for: "token", text: "Admin token" }), token, el("div", { class: "row" }, el("button", { class: "primary", type: "submit", text: "Sign in" })));
  show(el("h1", { text: "Sign in" }), message ? problem(message) : null,
    el("p", { class: "muted", text: "The token stays in this tab (sessionStorage) and is sent as Authorization: Bearer." }), form);
}

// ----- pages -------------------------------------------------------------------------------

async function overview() {
  const o = await api("GET", "/v1/overview");
  const charts = o.adapters.map((a) => el("div", { class: "card" },
    el("div", { class: "row" }, el("strong", { text: a.adapter }),
      el("span", { class: "muted", text: `${a.calls} calls, ${a.failures} failed (${(a.failureRate * 100).toFixed(1)}%) in the last hour` })),
    chart(a.minutes)));
  show(el("h1", { text: "Overview" }),
    el("section", {}, el("div", { class: "row" }, "Health: ", el("span", { class: o.health.status === "ok" ? "ok" : "bad", text: o.health.status }),
      el("span", { class: "muted", text: `database: ${o.health.store}; audit cursor ${o.health.cursor}; ${o.tenants} tenants` })),
      o.health.following ? problem("Following the shared store fails: " + o.health.following) : null),
    el("h2", { text: "Calls per minute, last hour" }),
    charts.length ? el("div", { class: "charts" }, charts) : el("p", { class: "muted", text: "No calls in the last hour." }));
}

function chart(minutes) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 80");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...minutes.map((m) => m.calls));
  minutes.forEach((m, i) => {
    for (const [cls, n] of [["calls", m.calls], ["failures", m.failures]]) {
      if (!n) continue;
      const r = document.createElementNS(ns, "rect");
      const h = (n / max) * 76;
      r.setAttribute("class", cls);
      r.setAttribute("x", String(i * 10 + 1));
      r.setAttribute("width", "8");
      r.setAttribute("y", String(80 - h));
      r.setAttribute("height", String(h));
      const t = document.createElementNS(ns, "title");
      t.textContent = `${m.at}: ${m.calls} calls, ${m.failures} failed`;
      r.append(t);
      svg.append(r);
    }
  });
  return svg;
}

async function adapters() {
  const list = await api("GET", "/v1/adapters");
  const out = el("div", { id: "deploy-result" });
  const file = el("input", { type: "file", id: "component", accept: ".wasm,application/wasm" });
  const name = el("input", { type: "text", id: "adapter-name", placeholder: "from the file name" });
  const stage = el("input", { type: "checkbox", id: "stage" });
  const force = el("input", { type: "checkbox", id: "force" });
  const replay = el("input", { type: "number", id: "replay", min: "1", max: "5000", placeholder: "off" });
  const form = el("form", { id: "deploy", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) return out.replaceChildren(problem("Choose a component (.wasm) first."));
    const adapter = name.value.trim() || f.name.split(/[-.]/)[0];
    const q = new URLSearchParams();
    if (stage.checked) q.set("stage", "true");
    if (force.checked) q.set("force", "true");
    if (replay.value) q.set("replay", replay.value);
    try {
      const d = await api("PUT", `/v1/adapters/${seg(adapter)}?${q}`, await f.arrayBuffer(), "application/wasm");
      flash = `Deployed ${d.name} ${d.version} (${d.digest}): ${d.state}` + (d.replay ? `; replay ${d.replay.verdict}` : "");
      location.hash = route(`adapters/${seg(d.name)}`);
    } catch (e) {
      out.replaceChildren(problem(e));
      if (e.body && e.body.error && e.body.error.report) out.append(replayView(e.body.error.report));
    }
  } },
  el("label", { for: "component", text: "Component" }), file,
  el("label", { for: "adapter-name", text: "Adapter name" }), name,
  el("div", { class: "row" }, stage, el("label", { for: "stage", text: "stage (store, do not activate)" })),
  el("div", { class: "row" }, force, el("label", { for: "force", text: "force (activate although tenants are refused or the replay fails)" })),
  el("label", { for: "replay", text: "Replay the last N recorded calls first (gate)" }), replay,
  el("div", { class: "row" }, el("button", { class: "primary", type: "submit", text: "Deploy" })));
  show(el("h1", { text: "Adapters" }),
    table(["adapter", "version", "digest", "operations"], list.adapters.map((a) => [
      el("a", { href: `adapters/${seg(a.name)}`, text: a.name }), a.version, el("code", { text: a.digest }), a.operations.join(", ")])),
    el("h2", { text: "Deploy a component" }), el("section", {}, form, out));
}

async function adapter(name) {
  const [details, versions, replays] = await Promise.all([
    api("GET", `/v1/adapters/${seg(name)}`), api("GET", `/v1/adapters/${seg(name)}/versions`), api("GET", `/v1/adapters/${seg(name)}/replays`)]);
  const note = el("div", { id: "adapter-result" });
  const act = (label, fn) => el("button", { type: "button", text: label, onclick: async () => {
    try { flash = await fn(); await render(); } catch (e) { note.replaceChildren(problem(e)); }
  } });
  const rows = versions.versions.map((v) => [
    el("span", { class: v.state, text: v.state }), v.version, el("code", { text: v.digest }), `${v.deployedAt} by ${v.deployedBy}`, v.pinnedTenants.join(", "),
    el("div", { class: "row" },
      v.state !== "active" ? act("Activate", async () => { const d = await api("POST", `/v1/adapters/${seg(name)}/activate`, { digest: v.digest }); return `${d.version} is active`; }) : null,
      el("button", { type: "button", text: "Replay", onclick: async () => {
        try { const r = await api("POST", `/v1/adapters/${seg(name)}/versions/${seg(v.digest)}/replay`, {}); location.hash = route(`replays/${seg(name)}/${seg(r.id)}`); } catch (e) { note.replaceChildren(problem(e)); }
      } }),
      v.state !== "active" ? act("Delete", async () => { await api("DELETE", `/v1/adapters/${seg(name)}/versions/${seg(v.digest)}`); return `deleted ${v.digest}`; }) : null)]);
  show(el("h1", { text: `Adapter ${name}` }), note,
    el("section", {}, el("div", { text: `Active: ${details.version} (${details.digest}), ${details.sizeBytes} bytes` }),
      el("div", { text: "Operations: " + details.operations.join(", ") }),
      el("div", { text: "Declared hosts: " + (details.outboundHosts.join(", ") || "none (endpoint fields only)") }),
      el("div", { class: "row" }, act("Roll back", async () => { const d = await api("POST", `/v1/adapters/${seg(name)}/rollback`); return `rolled back to ${d.version} (${d.digest})`; }))),
    el("h2", { text: "Versions" }), table(["state", "version", "digest", "deployed", "pinned tenants", ""], rows),
    el("h2", { text: "Canary" }), await canary(name, versions.versions),
    el("h2", { text: "Replay reports" }),
    replays.replays.length ? table(["when", "candidate", "calls", "verdict", ""], replays.replays.map((r) => [r.createdAt, `${r.candidate.version} ${r.candidate.digest}`, String(r.calls),
      el("span", { class: r.verdict, text: r.verdict }), el("a", { href: `replays/${seg(name)}/${seg(r.id)}`, text: "report" })])) : el("p", { class: "muted", text: "No replays yet." }));
}

async function canary(name, versions) {
  const box = el("section", { id: "canary" });
  let c = null;
  try { c = await api("GET", `/v1/adapters/${seg(name)}/canary`); } catch (e) { if (e.status !== 404) return problem(e); }
  const note = el("div");
  const run = (fn) => async (ev) => { ev && ev.preventDefault(); try { await fn(); await render(); } catch (e) { note.replaceChildren(problem(e)); } };
  if (c) {
    const side = (s) => `${s.calls} calls, ${s.failures} failed (${(s.failureRate * 100).toFixed(1)}%)`;
    box.append(el("div", { class: "row" }, el("span", { class: c.state, text: c.state }), `${c.version} (${c.digest}) for ${c.percent}% of tenants`, c.reason ? el("span", { class: "muted", text: c.reason }) : null),
      el("div", { text: `Canary tenants: ${side(c.canary)}; the others: ${side(c.baseline)}` }),
      el("div", { text: `Tenants in it: ${c.tenants.count} ` + c.tenants.first.join(", ") }),
      c.excluded.length ? el("div", { class: "muted", text: "Never selected (config refused): " + c.excluded.join(", ") }) : null);
    if (c.state === "running") {
      const percent = el("input", { type: "number", min: "1", max: "100", value: String(c.percent), id: "canary-percent" });
      box.append(el("div", { class: "row" }, percent,
        el("button", { type: "button", text: "Set share", onclick: run(() => api("PATCH", `/v1/adapters/${seg(name)}/canary`, { percent: Number(percent.value) })) }),
        el("button", { type: "button", text: "Promote", onclick: run(() => api("POST", `/v1/adapters/${seg(name)}/canary/promote`, {})) }),
        el("button", { type: "button", text: "Stop", onclick: run(() => api("DELETE", `/v1/adapters/${seg(name)}/canary`)) })));
      return box.append(note), box;
    }
  }
  const digest = el("select", { id: "canary-digest" }, versions.filter((v) => v.state !== "active").map((v) => el("option", { value: v.digest, text: `${v.version} ${v.digest}` })));
  const percent = el("input", { type: "number", min: "1", max: "100", value: "10", id: "canary-start-percent" });
  box.append(el("form", { class: "row", onsubmit: run(() => api("POST", `/v1/adapters/${seg(name)}/canary`, { digest: digest.value, percent: Number(percent.value) })) },
    "Start a canary: ", digest, percent, el("button", { type: "submit", text: "Start" })), note);
  return box;
}

function replayView(r) {
  const results = r.results.map((x) => el("div", { class: "exchange" },
    el("div", { class: "row" }, el("span", { class: x.status, text: x.status }), x.funcId, el("span", { class: "muted", text: x.tenant }),
      el("a", { href: `tenants/${seg(x.tenant)}/calls/${seg(x.callId)}`, text: x.callId })),
    x.diff ? table(["path", "recorded", "candidate"], x.diff.map((d) => [el("code", { text: d.path }), pretty(d.recorded), pretty(d.candidate)])) : null,
    (x.unmatched || []).map((u) => el("div", {}, el("div", { text: `unmatched: ${u.method} ${u.url}` }), el("div", { class: "muted", text: u.difference }),
      u.closest ? pretty(u.closest) : null)),
    x.reason ? el("div", { class: "muted", text: x.reason }) : null));
  const s = r.summary;
  return el("div", { id: "replay-report" },
    el("section", {}, el("div", { class: "row" }, "Verdict: ", el("span", { class: r.verdict, text: r.verdict })),
      el("div", { text: `${r.candidate.version} (${r.candidate.digest}) against recordings of ${r.baseline.version} (${r.baseline.digest}), ${r.calls} calls` }),
      el("div", { text: Object.entries(s).map(([k, v]) => `${k} ${v}`).join(", ") })),
    results);
}

async function replayReport(name, id) {
  const r = await api("GET", `/v1/adapters/${seg(name)}/replays/${seg(id)}`);
  show(el("h1", {}, "Replay of ", el("a", { href: `adapters/${seg(name)}`, text: name })), replayView(r));
}

async function tenants() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const q = el("input", { type: "text", id: "search", value: params.get("q") || "", placeholder: "tenant or project id contains…" });
  const adapterFilter = el("input", { type: "text", id: "adapter-filter", value: params.get("adapter") || "", placeholder: "adapter" });
  const started = performance.now();
  const query = new URLSearchParams({ limit: "100" });
  for (const k of ["q", "adapter", "after"]) if (params.get(k)) query.set(k, params.get(k));
  const page = await api("GET", `/v1/tenants?${query}`);
  const next = new URLSearchParams(params);
  if (page.next) next.set("after", page.next);
  show(el("h1", { text: "Tenants" }),
    el("form", { class: "row", onsubmit: (ev) => { ev.preventDefault(); const p = new URLSearchParams(); if (q.value) p.set("q", q.value); if (adapterFilter.value) p.set("adapter", adapterFilter.value); location.hash = route(`tenants?${p}`); } },
      q, adapterFilter, el("button", { type: "submit", text: "Search" }), el("a", { href: "tenants/new", text: "New tenant" })),
    table(["tenant", "adapter", "project", "pin", "updated"], page.tenants.map((t) => [el("a", { href: `tenants/${seg(t.tenant)}`, text: t.tenant }), t.adapter, t.projectId, t.pin || "", t.updatedAt])),
    el("div", { class: "row" }, page.next ? el("a", { id: "next-page", href: `tenants?${next}`, text: "Next page" }) : el("span", { class: "muted", text: "End of the list" }),
      el("span", { id: "page-time", class: "muted", text: `${page.tenants.length} shown in ${Math.round(performance.now() - started)} ms` })));
}

/** A form for crmConfig from the adapter's configSchema; secret (writeOnly) fields are write-only. */
function configForm(schema, current) {
  const fields = [];
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const box = el("div", { id: "config-form" });
  for (const [name, s] of Object.entries(props)) {
    const id = "cfg-" + name;
    const has = current && Object.prototype.hasOwnProperty.call(current, name);
    const isBool = JSON.stringify(s).includes("\"boolean\"");
    const isObject = JSON.stringify(s).includes("\"object\"");
    let input;
    if (s.writeOnly) {
      input = el("input", { type: "password", id, autocomplete: "new-password", placeholder: has ? "set: leave blank to keep" : "unset" });
    } else if (isBool) {
      input = el("input", { type: "checkbox", id, checked: has && [true, "true", "1", 1].includes(current[name]) });
    } else if (isObject) {
      input = el("textarea", { id, value: has ? JSON.stringify(current[name], null, 2) : "" });
    } else {
      input = el("input", { type: "text", id, value: has ? String(current[name]) : "" });
    }
    box.append(el("label", { for: id, text: name + (required.has(name) ? " *" : "") + (s.writeOnly ? " (secret)" : "") }), input,
      s.description ? el("div", { class: "muted", text: s.description }) : null);
    fields.push({ name, s, input, isBool, isObject, has });
  }
  const read = () => {
    // Fields the schema does not name stay as they are.
    const out = Object.assign({}, current || {});
    for (const f of fields) {
      if (f.s.writeOnly) {
        if (f.input.value) out[f.name] = f.input.value;
        else if (f.has) out[f.name] = "[redacted]"; // the host keeps the stored value
        else delete out[f.name];
      } else if (f.isBool) out[f.name] = f.input.checked;
      else if (f.isObject) { if (f.input.value.trim()) out[f.name] = JSON.parse(f.input.value); else delete out[f.name]; }
      else if (f.input.value !== "") out[f.name] = f.input.value;
      else delete out[f.name];
    }
    return out;
  };
  return { box, read };
}

async function tenant(id) {
  const isNew = id === "new";
  const list = await api("GET", "/v1/adapters");
  const t = isNew ? null : await api("GET", `/v1/tenants/${seg(id)}`);
  const note = el("div", { id: "tenant-result" });
  const idInput = el("input", { type: "text", id: "tenant-id", value: isNew ? "" : id, disabled: !isNew });
  const adapterSelect = el("select", { id: "tenant-adapter", disabled: !isNew }, list.adapters.map((a) => el("option", { value: a.name, text: a.name })));
  if (t) adapterSelect.value = t.adapter;
  const project = el("input", { type: "text", id: "tenant-project", value: t ? t.projectId : "" });
  const limits = el("textarea", { id: "tenant-limits", value: t ? JSON.stringify(t.limits, null, 2) : "{}" });
  const pin = el("select", { id: "tenant-pin" });
  const configBox = el("div");
  let form;
  const load = async () => {
    const a = adapterSelect.value;
    if (!a) return;
    const [details, versions] = await Promise.all([api("GET", `/v1/adapters/${seg(a)}`), api("GET", `/v1/adapters/${seg(a)}/versions`)]);
    form = configForm(details.configSchema, t ? t.crmConfig : {});
    configBox.replaceChildren(form.box);
    pin.replaceChildren(el("option", { value: "", text: "follow the active version" }), versions.versions.map((v) => el("option", { value: v.digest, text: `${v.version} ${v.digest} (${v.state})` })));
    pin.value = t && t.pin ? t.pin : "";
  };
  adapterSelect.addEventListener("change", load);
  await load();
  const save = el("form", { id: "tenant-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const body = { adapter: adapterSelect.value, crmConfig: form.read(), projectId: project.value || undefined, pin: pin.value || null, limits: JSON.parse(limits.value || "{}") };
      const saved = await api("PUT", `/v1/tenants/${seg(idInput.value.trim())}`, body);
      flash = `Saved tenant ${saved.tenant}`;
      if (isNew) location.hash = route(`tenants/${seg(saved.tenant)}`);
      else await render();
    } catch (e) { note.replaceChildren(problem(e)); }
  } }, el("label", { for: "tenant-id", text: "Tenant id" }), idInput, el("label", { for: "tenant-adapter", text: "Adapter" }), adapterSelect,
  el("label", { for: "tenant-project", text: "Project id" }), project, el("h2", { text: "crmConfig" }), configBox,
  el("label", { for: "tenant-pin", text: "Pin" }), pin, el("label", { for: "tenant-limits", text: "Limits (overrides, JSON)" }), limits,
  el("div", { class: "row" }, el("button", { class: "primary", type: "submit", text: "Save" })));
  if (isNew) return show(el("h1", { text: "New tenant" }), note, el("section", {}, save));
  const keyNote = el("div");
  const keyId = el("input", { type: "text", id: "revoke-key-id", placeholder: "key id" });
  show(el("h1", { text: `Tenant ${id}` }), note, el("div", { class: "row" },
    el("a", { href: `tenants/${seg(id)}/calls`, text: "Calls" }), el("a", { href: `tenants/${seg(id)}/events`, text: "Inbound events" })),
    el("section", {}, save),
    el("h2", { text: "API keys" }), el("section", {}, el("div", { class: "row" },
      el("button", { type: "button", id: "issue-key", text: "Issue a key", onclick: async () => {
        try { const k = await api("POST", `/v1/tenants/${seg(id)}/keys`); keyNote.replaceChildren(el("div", { class: "notice", text: `Key ${k.keyId} (shown only now): ${k.key}` })); } catch (e) { keyNote.replaceChildren(problem(e)); }
      } }), keyId,
      el("button", { type: "button", text: "Revoke", onclick: async () => {
        try { await api("DELETE", `/v1/tenants/${seg(id)}/keys/${seg(keyId.value.trim())}`); keyNote.replaceChildren(el("div", { class: "notice", text: "Revoked" })); } catch (e) { keyNote.replaceChildren(problem(e)); }
      } })), keyNote),
    el("div", { class: "row" }, el("button", { type: "button", text: "Delete tenant", onclick: async () => {
      if (!confirm(`Delete tenant ${id} with its keys, calls and events?`)) return;
      try { await api("DELETE", `/v1/tenants/${seg(id)}`); location.hash = route("tenants"); } catch (e) { note.replaceChildren(problem(e)); }
    } })));
}

async function calls(id) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const outcome = el("select", { id: "outcome", onchange: () => { location.hash = route(`tenants/${seg(id)}/calls?outcome=${outcome.value}`); } },
    ["", "complete", "failure"].map((o) => el("option", { value: o, text: o || "any outcome" })));
  outcome.value = params.get("outcome") || "";
  const list = await api("GET", `/v1/tenants/${seg(id)}/calls?limit=100&outcome=${seg(outcome.value)}`);
  show(el("h1", {}, "Calls of ", el("a", { href: `tenants/${seg(id)}`, text: id })), el("div", { class: "row" }, outcome),
    table(["started", "function", "outcome", "kind", "ms", "version"], list.calls.map((c) => [
      el("a", { href: `tenants/${seg(id)}/calls/${seg(c.callId)}`, text: c.startedAt }), c.funcId, el("span", { class: c.outcome, text: c.outcome }),
      c.errorKind || "", c.durationMs.toFixed(1), `${c.adapter} ${c.version}`])));
}

function body(b) {
  if (!b) return el("span", { class: "muted", text: "(none)" });
  let text = b.data;
  if (b.encoding === "utf8") { try { text = JSON.stringify(JSON.parse(b.data), null, 2); } catch (_) { /* not JSON: as is */ } }
  else text = `(base64) ${b.data}`;
  return el("div", {}, pretty(text), b.truncated ? el("div", { class: "muted", text: `first 64 KiB of ${b.size} bytes` }) : null);
}

function headerTable(h) {
  return h && h.length ? table(["header", "value"], h.map(([k, v]) => [k, v])) : el("span", { class: "muted", text: "(no headers)" });
}

async function callPage(id, callId) {
  const t = await api("GET", `/v1/tenants/${seg(id)}/calls/${seg(callId)}`);
  const total = Math.max(1, t.durationMs);
  const versions = await api("GET", `/v1/adapters/${seg(t.adapter)}/versions`);
  const target = el("select", { id: "replay-version" }, versions.versions.map((v) => el("option", { value: v.digest, text: `${v.version} ${v.digest} (${v.state})` })));
  const replayNote = el("div", { id: "replay-result" });
  show(el("h1", {}, `${t.funcId} for `, el("a", { href: `tenants/${seg(id)}`, text: id })),
    el("section", {}, el("div", { class: "row" }, el("span", { class: t.outcome, text: t.outcome }), el("span", { text: `${t.adapter} ${t.version}` }),
      el("span", { text: `${t.durationMs.toFixed(1)} ms` }), el("code", { text: t.callId })),
      el("h2", { text: "Request" }), pretty(t.request === null ? "(larger than a recording keeps)" : t.request)),
    el("h2", { text: `Outbound exchanges (${t.outbound.length})` }),
    t.outbound.map((e) => el("div", { class: "exchange" },
      el("div", { class: "row" }, el("strong", { text: `#${e.attempt} ${e.method}` }), el("code", { text: e.url }),
        el("span", { class: e.status && e.status < 400 ? "ok" : "bad", text: e.status ? String(e.status) : (e.error || "no answer") }),
        el("span", { class: "muted", text: `at ${e.startedMs.toFixed(1)} ms, ${e.durationMs.toFixed(1)} ms` })),
      el("div", { class: "bar", style: { marginLeft: `${(e.startedMs / total) * 100}%`, width: `${Math.max(0.5, (e.durationMs / total) * 100)}%` } }),
      e.omitted ? el("div", { class: "muted", text: "bodies and headers left out: the call's trace was full" }) : [
        el("h2", { text: "Request headers" }), headerTable(e.requestHeaders), el("h2", { text: "Request body" }), body(e.requestBody),
        el("h2", { text: "Response headers" }), headerTable(e.responseHeaders), el("h2", { text: "Response body" }), body(e.responseBody)])),
    el("h2", { text: "Result" }), t.error ? el("div", { class: "error", text: `${t.error.kind}: ${t.error.message}` }) : pretty(t.crmData || {}),
    el("h2", { text: "Replay this call" }),
    el("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const r = await api("POST", `/v1/adapters/${seg(t.adapter)}/versions/${seg(target.value)}/replay`, { tenants: [id], callIds: [callId], limit: 1 });
        replayNote.replaceChildren(replayView(r));
      } catch (e) { replayNote.replaceChildren(problem(e)); }
    } }, "against ", target, el("button", { type: "submit", text: "Replay" })), replayNote);
}

async function events(id) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const after = params.get("after") || "0";
  const list = await api("GET", `/v1/tenants/${seg(id)}/events?after=${seg(after)}&limit=100`);
  show(el("h1", {}, "Inbound events of ", el("a", { href: `tenants/${seg(id)}`, text: id })),
    el("p", { class: "muted", text: `After cursor ${after}` }),
    table(["cursor", "received", "event"], list.events.map((e) => [e.cursor, e.receivedAt, pretty(e)])),
    el("div", { class: "row" }, list.next !== after ? el("a", { href: `tenants/${seg(id)}/events?after=${seg(list.next)}`, text: "Newer" }) : el("span", { class: "muted", text: "Nothing newer" })));
}

async function audit() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const after = params.get("after") || "0";
  const list = await api("GET", `/v1/audit?after=${seg(after)}&limit=100`);
  show(el("h1", { text: "Audit log" }),
    table(["#", "at", "action", "by", "adapter", "tenant", "digest", "detail"], list.entries.map((e) => [e.cursor, e.at, e.action, e.actor, e.adapter || "", e.tenant || "", e.digest || "", e.detail ? pretty(e.detail) : ""])),
    el("div", { class: "row" }, list.next !== after ? el("a", { href: `audit?after=${seg(list.next)}`, text: "Next page" }) : el("span", { class: "muted", text: "End of the log" })));
}

// ----- routing -----------------------------------------------------------------------------

async function render() {
  if (!sessionStorage.getItem(TOKEN)) return signIn();
  document.getElementById("nav").hidden = false;
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  const p = path.split("/").map(decodeURIComponent);
  try {
    if (!path) await overview();
    else if (p[0] === "adapters" && p.length === 1) await adapters();
    else if (p[0] === "adapters") await adapter(p[1]);
    else if (p[0] === "replays") await replayReport(p[1], p[2]);
    else if (p[0] === "tenants" && p.length === 1) await tenants();
    else if (p[0] === "tenants" && p.length === 2) await tenant(p[1]);
    else if (p[0] === "tenants" && p[2] === "calls" && p.length === 3) await calls(p[1]);
    else if (p[0] === "tenants" && p[2] === "calls") await callPage(p[1], p[3]);
    else if (p[0] === "tenants" && p[2] === "events") await events(p[1]);
    else if (p[0] === "audit") await audit();
    else show(el("h1", { text: "Not found" }), el("a", { href: "", text: "Overview" }));
  } catch (e) {
    show(el("h1", { text: "Something went wrong" }), problem(e));
  }
  document.body.dataset.ready = path || "overview";
}

document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", render);
render();
