// The dashboard: the tenant's campaigns (polled), and the selected campaign followed live over SSE.
// The API key lives in this module and in sessionStorage (this tab only); it is sent solely as an
// Authorization header and is never put in a URL or written to the console.

import { drawChart } from "./chart.js";
import { HttpError, httpError, readEventStream } from "./sse.js";

const KEY_STORE = "dialerd.apiKey";
const LIST_EVERY_MS = 3000;
const HEALTH_EVERY_MS = 5000;
const LOG_MAX = 100;
const CHART_MAX = 600; // 20 minutes of 2 s snapshots
// Following a campaign replays its history (for the log and the failure reasons) only up to this size;
// a bigger one is followed live from the moment it is opened.
const REPLAY_MAX_CONTACTS = 20000;
const STATUSES = ["pending", "originated", "connected", "completed", "failed", "cancelled"];
const FINAL = ["completed", "failed", "cancelled"];
const ACTIONS = {
  start: ["draft", "scheduled", "paused"],
  pause: ["running"],
  resume: ["paused"],
  stop: ["draft", "scheduled", "running", "paused"],
};

const $ = (id) => document.getElementById(id);
const testId = (id) => document.querySelector(`[data-testid="${id}"]`);
const fmt = (n) => Number(n ?? 0).toLocaleString("en-US");

let apiKey = null;
let campaigns = []; // the last list, as the API returned it
let view = null; // the selected campaign's live state, see select()

// ---- API ------------------------------------------------------------------------------------------

function authHeaders() {
  return { Authorization: `Bearer ${apiKey}` };
}

async function api(method, path) {
  const resp = await fetch(path, { method, headers: authHeaders(), cache: "no-store" });
  if (!resp.ok) {
    const err = await httpError(resp);
    if (resp.status === 401) signOut(`The API key was refused: ${err.message}`);
    throw err;
  }
  return resp.json();
}

// ---- key ------------------------------------------------------------------------------------------

function signIn(key) {
  apiKey = key;
  sessionStorage.setItem(KEY_STORE, key);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  refreshCampaigns();
}

function signOut(message = "") {
  apiKey = null;
  sessionStorage.removeItem(KEY_STORE);
  closeView();
  campaigns = [];
  $("campaign-rows").replaceChildren();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

// ---- PBX state ------------------------------------------------------------------------------------

function setPbx(connected, driver = null) {
  const node = $("pbx");
  node.dataset.connected = connected === null ? "unknown" : String(connected);
  const what = connected === null ? "unknown" : connected ? "connected" : "disconnected";
  $("pbx-text").textContent = `PBX ${what}${driver ? ` · ${driver}` : ""}`;
}

async function refreshHealth() {
  try {
    const resp = await fetch("health", { cache: "no-store" });
    const body = await resp.json();
    setPbx(body.pbx?.connected ?? null, body.pbx?.driver ?? null);
  } catch {
    setPbx(null);
  }
}

// ---- the campaign list ----------------------------------------------------------------------------

let listing = false;

async function refreshCampaigns() {
  if (!apiKey || listing) return;
  listing = true;
  try {
    const body = await api("GET", "api/v1/campaigns?limit=50");
    campaigns = body.campaigns;
    $("campaigns-total").textContent = body.total > campaigns.length
      ? `(latest ${campaigns.length} of ${fmt(body.total)})` : `(${fmt(body.total)})`;
    $("campaigns-error").textContent = "";
    renderCampaigns();
    const current = view && campaigns.find((c) => c.id === view.id);
    if (current) applyCampaign(view, current);
  } catch (err) {
    if (apiKey) $("campaigns-error").textContent = `Could not list campaigns: ${err.message}`;
  } finally {
    listing = false;
  }
}

function finalCount(contacts) {
  return FINAL.reduce((sum, s) => sum + (contacts[s] ?? 0), 0);
}

function cell(tag, className = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function newRow(c) {
  const tr = cell("tr");
  tr.dataset.campaignId = c.id;
  tr.dataset.testid = "campaign-row";
  const name = cell("th");
  name.scope = "row";
  const open = cell("button", "link");
  open.type = "button";
  open.addEventListener("click", () => select(c.id));
  const id = cell("small", "muted id");
  id.textContent = c.id;
  id.title = c.id;
  name.append(open, id);
  const status = cell("td");
  status.append(cell("span", "badge"));
  const progress = cell("td", "progress-cell");
  progress.append(cell("progress"), cell("span", "muted"));
  const outcomes = cell("td", "outcomes");
  for (const s of FINAL) {
    const chip = cell("span", `chip st-${s}`);
    chip.title = s;
    outcomes.append(chip);
  }
  tr.append(name, status, progress, outcomes, cell("td", "num"));
  return tr;
}

function updateRow(tr, c) {
  const [name, status, progress, outcomes, inFlight] = tr.children;
  name.firstChild.textContent = c.name;
  name.firstChild.setAttribute("aria-label", `Follow campaign ${c.name}`);
  const badge = status.firstChild;
  badge.textContent = c.status;
  badge.className = `badge cs-${c.status}`;
  const total = c.contacts.total ?? 0;
  const bar = progress.firstChild;
  bar.max = Math.max(total, 1);
  bar.value = finalCount(c.contacts);
  bar.setAttribute("aria-label", `${c.name}: ${finalCount(c.contacts)} of ${total} contacts done`);
  progress.lastChild.textContent = `${fmt(finalCount(c.contacts))} / ${fmt(total)}`;
  FINAL.forEach((s, i) => {
    outcomes.children[i].textContent = fmt(c.contacts[s]);
  });
  inFlight.textContent = fmt(c.calls_in_flight);
  const selected = view?.id === c.id;
  tr.classList.toggle("selected", selected);
  if (selected) tr.setAttribute("aria-current", "true");
  else tr.removeAttribute("aria-current");
}

function renderCampaigns() {
  const body = $("campaign-rows");
  const rows = new Map([...body.children].map((tr) => [tr.dataset.campaignId, tr]));
  const wanted = campaigns.map((c) => {
    const tr = rows.get(c.id) ?? newRow(c);
    updateRow(tr, c);
    return tr;
  });
  // Re-append only when the order changed: moving a row would drop the keyboard focus inside it.
  if (wanted.length !== body.children.length || wanted.some((tr, i) => body.children[i] !== tr)) {
    body.replaceChildren(...wanted);
  }
  $("campaigns-empty").hidden = campaigns.length > 0;
}

// ---- the selected campaign ------------------------------------------------------------------------

function closeView() {
  if (view) view.abort.abort();
  view = null;
  $("detail-body").hidden = true;
  $("detail-placeholder").hidden = false;
}

function select(id) {
  const c = campaigns.find((x) => x.id === id);
  if (!c || view?.id === id) return;
  closeView();
  view = {
    id,
    name: c.name,
    status: c.status,
    contacts: c.contacts,
    inFlight: c.calls_in_flight,
    snapshot: null,
    points: [],
    reasons: new Map(),
    reasonsComplete: (c.contacts.total ?? 0) <= REPLAY_MAX_CONTACTS,
    log: [], // newest first
    seen: 0, // the highest event id applied; a reconnect's replay may repeat some
    stream: "connecting",
    ended: false,
    abort: new AbortController(),
    timer: null,
  };
  $("detail-placeholder").hidden = true;
  $("detail-body").hidden = false;
  $("action-error").textContent = "";
  renderCampaigns();
  renderView(view);
  follow(view);
}

/** Takes a campaign the API just returned (after an action, or at the end) into the list at once. */
function mergeCampaign(c) {
  const i = campaigns.findIndex((x) => x.id === c.id);
  if (i >= 0) campaigns[i] = c;
  renderCampaigns();
}

function applyCampaign(v, c) {
  v.name = c.name;
  v.status = c.status;
  v.contacts = c.contacts;
  v.inFlight = c.calls_in_flight;
  scheduleRender(v);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function setStream(v, state, detail = "") {
  v.stream = state;
  v.streamDetail = detail;
  scheduleRender(v);
}

/** Follows the campaign's event stream until it ends or another campaign is selected; reconnects
 * from the last event id after a network error, as EventSource would. */
async function follow(v) {
  let lastId = v.reasonsComplete ? "0" : null; // "0" replays everything, none starts live
  let retryMs = 2000;
  const { signal } = v.abort;
  while (!signal.aborted && !v.ended) {
    try {
      await readEventStream(`api/v1/campaigns/${encodeURIComponent(v.id)}/events`, {
        headers: { ...authHeaders(), ...(lastId === null ? {} : { "Last-Event-ID": lastId }) },
        signal,
        onId: (id) => {
          lastId = id;
          if (v.stream !== "live") setStream(v, "live");
        },
        onMessage: (msg) => onStreamMessage(v, msg),
        onRetry: (ms) => { retryMs = ms; },
      });
      if (!v.ended) setStream(v, "reconnecting", "the stream closed");
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof HttpError && err.status === 401) {
        signOut(`The API key was refused: ${err.message}`);
        return;
      }
      if (err instanceof HttpError && err.status === 404) {
        setStream(v, "closed", err.message);
        return;
      }
      setStream(v, "reconnecting", err.message);
    }
    if (!v.ended) await sleep(retryMs, signal);
  }
}

function onStreamMessage(v, { event, id, data }) {
  if (v !== view) return;
  if (event === null && data.type === "snapshot") {
    applySnapshot(v, data);
  } else if (event === "end") {
    v.ended = true;
    v.status = data.status;
    setStream(v, "ended");
    finish(v);
  } else if (event) {
    const n = Number(id);
    if (n <= v.seen) return;
    v.seen = n;
    if (event === "campaign") v.status = data.status;
    if (event === "failed") v.reasons.set(data.reason, (v.reasons.get(data.reason) ?? 0) + 1);
    v.log.unshift(logEntry(event, data));
    if (v.log.length > LOG_MAX) v.log.length = LOG_MAX;
  }
  scheduleRender(v);
}

function applySnapshot(v, snap) {
  v.snapshot = snap;
  v.status = snap.status;
  v.contacts = snap.contacts;
  v.inFlight = snap.calls_in_flight;
  if (typeof snap.pbx_connected === "boolean") setPbx(snap.pbx_connected);
  const listed = campaigns.find((c) => c.id === v.id);
  if (listed) {
    // The snapshot is fresher than the last poll: keep the list row in step with the detail.
    Object.assign(listed, { status: snap.status, contacts: snap.contacts, calls_in_flight: snap.calls_in_flight });
    renderCampaigns();
  }
  addPoint(v, Date.parse(snap.at) || Date.now(), snap.calls_in_flight, snap.contacts);
}

function addPoint(v, t, inFlight, contacts) {
  v.points.push({ t, inFlight, completed: contacts.completed ?? 0, failed: contacts.failed ?? 0 });
  if (v.points.length > CHART_MAX) v.points.splice(0, v.points.length - CHART_MAX);
}

/** After `end`: the final figures (no more snapshots come), and the chart's closing point. */
async function finish(v) {
  try {
    const c = await api("GET", `api/v1/campaigns/${encodeURIComponent(v.id)}`);
    mergeCampaign(c);
    if (v !== view) return;
    applyCampaign(v, c);
    if (v.points.length) addPoint(v, Date.now(), c.calls_in_flight, c.contacts);
    scheduleRender(v);
  } catch (err) {
    if (v === view) setStream(v, "ended", `could not read the final figures: ${err.message}`);
  }
}

// ---- the transitions log --------------------------------------------------------------------------

function clockTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? "" : new Date(t).toLocaleTimeString("en-GB", { hour12: false });
}

function failure(d) {
  const code = d.sip_code ? ` (SIP ${d.sip_code})` : d.cause ? ` (cause ${d.cause})` : "";
  return `${(d.reason ?? "unknown").replaceAll("_", " ")}${code}`;
}

function describe(kind, d) {
  switch (kind) {
    case "originated": return `dialling, attempt ${d.attempt ?? 1}`;
    case "connected": return "answered";
    case "completed": return typeof d.talk_seconds === "number" ? `talked ${d.talk_seconds.toFixed(1)} s` : "done";
    case "failed": return failure(d);
    case "pending": return `${failure(d)}; retry${d.retry_at ? ` at ${clockTime(d.retry_at)}` : ""}`;
    case "cancelled": return (d.reason ?? "cancelled").replaceAll("_", " ");
    case "campaign": return `campaign ${d.status}${d.action ? ` (${d.action.replaceAll("_", " ")})` : ""}`;
    default: return "";
  }
}

function logEntry(kind, d) {
  return { id: d.id, kind, at: d.at, who: d.phone_number ?? "", text: describe(kind, d) };
}

// ---- rendering ------------------------------------------------------------------------------------

// Many events can arrive at once (a replay); the view is redrawn at most every 100 ms.
function scheduleRender(v) {
  if (v.timer !== null) return;
  v.timer = setTimeout(() => {
    v.timer = null;
    if (v === view) renderView(v);
  }, 100);
}

function renderView(v) {
  $("detail-title").textContent = v.name;
  const badge = $("detail-status");
  badge.textContent = v.status;
  badge.className = `badge cs-${v.status}`;
  const stream = $("stream-state");
  stream.dataset.state = v.stream;
  stream.textContent = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…",
    ended: "stream ended", closed: "stream closed" }[v.stream] + (v.streamDetail ? ` (${v.streamDetail})` : "");

  for (const button of document.querySelectorAll(".controls button")) {
    button.disabled = !ACTIONS[button.dataset.action].includes(v.status);
  }

  const total = v.contacts.total ?? 0;
  const done = finalCount(v.contacts);
  $("detail-progress").max = Math.max(total, 1);
  $("detail-progress").value = done;
  $("progress-label").textContent = `${fmt(done)} of ${fmt(total)} contacts done`
    + (total ? ` · ${Math.floor((done / total) * 100)}%` : "");
  for (const s of STATUSES) testId(`count-${s}`).textContent = fmt(v.contacts[s]);

  const snap = v.snapshot;
  testId("calls-in-flight").textContent = fmt(v.inFlight);
  testId("calls-per-minute").textContent = snap ? fmt(snap.calls_per_minute) : "–";
  testId("answer-rate").textContent = snap ? `${Math.round(snap.answer_rate * 100)}%` : "–";
  testId("avg-talk").textContent = snap ? `${Number(snap.avg_talk_seconds).toFixed(1)} s` : "–";

  $("reasons-scope").textContent = v.reasonsComplete ? "" : "(since opened)";
  const reasons = [...v.reasons].sort((a, b) => b[1] - a[1]).map(([reason, n]) => {
    const li = cell("li");
    li.dataset.reason = reason;
    const label = cell("span");
    label.textContent = reason.replaceAll("_", " ");
    const count = cell("b");
    count.textContent = fmt(n);
    li.append(label, count);
    return li;
  });
  if (!reasons.length) {
    const li = cell("li", "muted");
    li.textContent = "none so far";
    reasons.push(li);
  }
  $("reasons").replaceChildren(...reasons);

  drawChart($("chart"), v.points);

  $("log").replaceChildren(...v.log.map((e) => {
    const li = cell("li");
    li.dataset.eventId = e.id;
    li.dataset.kind = e.kind;
    const time = cell("time");
    time.dateTime = e.at ?? "";
    time.textContent = clockTime(e.at);
    const kind = cell("span", `kind st-${e.kind}`);
    kind.textContent = e.kind;
    const who = cell("span", "who");
    who.textContent = e.who;
    const what = cell("span", "what");
    what.textContent = e.text;
    li.append(time, kind, who, what);
    return li;
  }));
}

async function act(action) {
  const v = view;
  if (!v) return;
  if (action === "stop" && !window.confirm(`Stop “${v.name}”? Its pending contacts are cancelled.`)) return;
  $("action-error").textContent = "";
  try {
    const c = await api("POST", `api/v1/campaigns/${encodeURIComponent(v.id)}/${action}`);
    mergeCampaign(c);
    if (v === view) applyCampaign(v, c);
  } catch (err) {
    $("action-error").textContent = `${action} failed: ${err.message}`;
  }
}

// ---- start ----------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("api-key").value.trim();
  $("api-key").value = "";
  if (key) signIn(key);
});
$("logout").addEventListener("click", () => signOut());
for (const button of document.querySelectorAll(".controls button")) {
  button.addEventListener("click", () => act(button.dataset.action));
}

refreshHealth();
setInterval(refreshHealth, HEALTH_EVERY_MS);
setInterval(refreshCampaigns, LIST_EVERY_MS);
const saved = sessionStorage.getItem(KEY_STORE);
if (saved) signIn(saved);
else signOut();
