// The dashboard: reads the grader's API with the key typed into the page (kept in this
// tab's sessionStorage, sent in the Authorization header, never in a URL).
"use strict";

const KEY = "tierflow-key";
const $ = id => document.getElementById(id);
const state = {summary: null, metrics: []};

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" || typeof c === "number"
      ? document.createTextNode(String(c)) : c);
  }
  return node;
}

function status(text, error) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(error));
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.title ? `${status} ${body.title}${body.detail ? ": " + body.detail : ""}`
                             : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, {headers: {Authorization: `Bearer ${key}`}});
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function tierLabel(ladder, name) {
  const found = ladder.tiers.find(t => t.name === name);
  return found && found.label !== name ? `${found.label} (${name})` : name;
}

// --- overview ------------------------------------------------------------------------------

function renderDistribution(summary) {
  $("as-of").textContent = `${summary.customers.toLocaleString("en")} customers · policy ` +
    `version ${summary.policy_version} · as of ${summary.as_of.replace("T", " ").slice(0, 19)} UTC`;
  const cards = summary.ladders.map(ladder => {
    const card = h("div", {class: "card", "data-ladder": ladder.name},
                   h("h3", {}, ladder.label !== ladder.name
                     ? `${ladder.label} (${ladder.name})` : ladder.name));
    const chart = h("div");
    card.appendChild(chart);
    Charts.bars(chart, ladder.tiers.map(t => ({label: t.label, count: t.count, share: t.share})),
                `${ladder.label}: customers per tier`);
    return card;
  });
  $("distribution").replaceChildren(...cards);
}

function renderPolicy(summary) {
  const blocks = summary.ladders.map(ladder => h("div", {class: "policy-ladder"},
    h("h3", {}, ladder.label !== ladder.name ? `${ladder.label} (${ladder.name})` : ladder.name),
    ladder.downgrade_grace_days
      ? h("p", {class: "note"}, `A customer who falls below their tier keeps it for ` +
          `${ladder.downgrade_grace_days} days before moving down.`) : null,
    h("ol", {}, ladder.tiers.map(t => h("li", {},
      h("strong", {}, t.label), t.label !== t.name ? ` (${t.name})` : "",
      `: ${t.when === "everyone else" ? "everyone else" : "when " + t.when}`,
      t.stay_when ? `; stays while ${t.stay_when}` : "",
      t.actions.map(a => h("span", {class: "tag"}, a)))))));
  $("policy").replaceChildren(...blocks);
}

function renderChanges() {
  const summary = state.summary;
  const name = $("changes-ladder").value;
  const series = summary.activity.ladders[name];
  if (!series) return;
  Charts.lines($("changes"), {
    title: `Tier changes per day on ${name}`, days: summary.activity.days,
    series: [
      {name: "up", values: series.up, colour: "#137333"},
      {name: "down", values: series.down, colour: "#b42318"},
      {name: "first graded", values: series.initial, colour: "#64748b"},
    ],
  });
}

async function renderScatter() {
  const ladder = $("scatter-ladder").value, x = $("scatter-x").value, y = $("scatter-y").value;
  const q = new URLSearchParams({ladder, x, y, limit: "2000"});
  const data = await api(`/v1/dashboard/scatter?${q}`);
  const spec = state.summary.ladders.find(l => l.name === data.ladder);
  Charts.scatter($("scatter"), {
    points: data.points, tiers: spec.tiers, lines: data.lines, quadrants: data.quadrants,
    xLabel: x, yLabel: y, onPick: id => { $("search").value = id; findCustomer(id); },
  });
  $("scatter-note").textContent = `${data.sampled.toLocaleString("en")} customers sampled ` +
    `of ${data.customers.toLocaleString("en")}; lines at ${x} ${data.lines.x.toLocaleString("en")} ` +
    `and ${y} ${data.lines.y.toLocaleString("en")}. Click a dot to look the customer up.`;
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map(([value, text]) => h("option", {value}, text)));
  if (chosen) select.value = chosen;
}

async function loadOverview() {
  const summary = state.summary = await api("/v1/dashboard/summary");
  renderDistribution(summary);
  renderPolicy(summary);
  const ladders = summary.ladders.map(l => [l.name, l.label !== l.name ? `${l.label} (${l.name})` : l.name]);
  if (!$("scatter-ladder").options.length) {
    fillSelect($("scatter-ladder"), ladders, ladders[0][0]);
    fillSelect($("changes-ladder"), ladders, ladders[0][0]);
    fillSelect($("scatter-x"), summary.metrics.map(m => [m, m]), "spend_365d");
    fillSelect($("scatter-y"), summary.metrics.map(m => [m, m]), "orders_365d");
  }
  renderChanges();
  await renderScatter();
}

// --- one customer --------------------------------------------------------------------------

function conditionList(node) {
  const mark = node.passed ? "✓" : "✗";
  const cls = node.passed ? "pass" : "fail";
  if (node.kind === "leaf") return h("li", {}, h("span", {class: cls}, mark), " ", node.text);
  const word = {all: "all of", any: "any of", not: "not"}[node.kind];
  return h("li", {}, h("span", {class: cls}, mark), ` ${word}:`,
           h("ul", {class: "conditions"}, node.parts.map(conditionList)));
}

const WHY = {entry: "its conditions hold", stay: "kept by its stay-while rule",
             grace: "a downgrade is waiting out the grace period", override: "pinned by an admin"};

function renderCustomer(customer, explained, history) {
  const ladders = state.summary ? state.summary.ladders : [];
  const rows = Object.entries(customer.tiers).map(([name, t]) => h("tr", {},
    h("td", {}, name), h("td", {class: "chosen"}, t.label !== t.tier ? `${t.label} (${t.tier})` : t.tier),
    h("td", {}, t.computed), h("td", {}, t.since.slice(0, 10)),
    h("td", {}, t.override ? `pinned: ${t.override.reason}` +
      (t.override.expires_at ? ` (until ${t.override.expires_at.slice(0, 10)})` : "")
      : t.pending_downgrade ? `to ${t.pending_downgrade.to} on ${t.pending_downgrade.effective_at.slice(0, 10)}` : "")));
  const metrics = Object.entries(customer.metrics)
    .filter(([, v]) => v !== null && v !== 0 && v !== "0.00")
    .map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, String(v))));
  const explanation = Object.entries(explained.ladders).map(([name, l]) => {
    const ladder = ladders.find(x => x.name === name);
    const forecast = l.forecast
      ? `Next, if nothing else happens: ${l.forecast.from_tier} → ${l.forecast.to_tier} on ${l.forecast.on}.`
      : "No change is due with time alone.";
    return h("div", {class: "card explain", "data-ladder": name},
      h("h3", {}, `${name}: ${ladder ? tierLabel(ladder, l.tier) : l.tier} — ${WHY[l.why] || l.why}`),
      h("ul", {class: "conditions"}, l.tiers.map(t => h("li", {class: t.chosen ? "chosen" : ""},
        `${t.chosen ? "▶ " : ""}${t.label !== t.name ? `${t.label} (${t.name})` : t.name}`,
        t.when ? h("ul", {class: "conditions"}, conditionList(t.when)) : h("span", {class: "note"}, " — everyone else")))),
      h("p", {class: "note forecast"}, forecast));
  });
  const changes = history.items.map(m => h("tr", {},
    h("td", {}, (m.changed_at || m.erased_at || "").replace("T", " ").slice(0, 16)),
    h("td", {}, m.ladder || ""),
    h("td", {}, m.type === "tier.changed" ? `${m.from_tier || "(first)"} → ${m.to_tier}`
      : m.type === "tier.downgrade_scheduled" ? `downgrade to ${m.to_tier} scheduled` : "erased"),
    h("td", {}, m.reason || "")));
  $("customer").replaceChildren(
    h("h3", {id: "customer-id"}, `${customer.customer_id} · policy version ${customer.policy_version}`),
    h("div", {class: "grid2"},
      h("div", {class: "card"}, h("h3", {}, "Tiers"), h("table", {id: "customer-tiers"},
        h("tr", {}, ["ladder", "tier", "rules give", "since", ""].map(c => h("th", {}, c))), rows)),
      h("div", {class: "card"}, h("h3", {}, "Metrics"), h("table", {}, metrics))),
    h("h3", {}, "Why, and what is missing"),
    h("div", {class: "cards", id: "explanation"}, explanation),
    h("h3", {}, "History"),
    h("div", {class: "card"}, h("table", {id: "history"},
      h("tr", {}, ["when (UTC)", "ladder", "change", "why"].map(c => h("th", {}, c))), changes)));
}

async function findCustomer(id) {
  id = id.trim();
  if (!id) return;
  const path = `/v1/customers/${encodeURIComponent(id)}`;
  try {
    const [customer, explained, history] = await Promise.all(
      [api(path), api(`${path}/explain`), api(`${path}/history?limit=20`)]);
    renderCustomer(customer, explained, history);
  } catch (e) {
    $("customer").replaceChildren(h("p", {class: "fail"},
      e.status === 404 ? `No customer ${id} has been seen.` : `Could not load ${id}: ${e.message}`));
  }
}

// --- the key -------------------------------------------------------------------------------

async function start() {
  status("Loading…");
  try {
    await loadOverview();
    $("main").hidden = false;
    $("forget").hidden = false;
    status("Showing the grader's figures.");
  } catch (e) {
    $("main").hidden = true;
    if (e.status === 401 || e.status === 403) {
      sessionStorage.removeItem(KEY);
      status(`That key cannot read tiers (${e.message}). Type a key with tiers:read.`, true);
    } else {
      status(`Could not load the figures: ${e.message}`, true);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", event => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("main").hidden = true;
    $("forget").hidden = true;
    status("Key forgotten. Type an API key to see the tiers.");
  });
  $("search-form").addEventListener("submit", event => {
    event.preventDefault();
    findCustomer($("search").value);
  });
  for (const id of ["scatter-ladder", "scatter-x", "scatter-y"]) {
    $(id).addEventListener("change", () => renderScatter().catch(e => status(e.message, true)));
  }
  $("changes-ladder").addEventListener("change", renderChanges);
  if (sessionStorage.getItem(KEY)) start();
});
