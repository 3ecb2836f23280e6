// The dashboard: the tenant's campaigns (polled), and the selected campaign followed live over SSE.
// The API key lives in this module and in sessionStorage (this tab only); it is sent solely as an
// Authorization header and is never put in a URL or written to the console.

import { drawChart } from "./chart.js";
import { HttpError, httpError, readEventStream } from "./sse.js";

const KEY_STORE = "dialerd.apiKey";
const LIST_EVERY_MS = 3000;
const SEARCH_DELAY_MS = 250; // typing in the search box asks the server once it pauses
const ACTIVE_MAX = 1000; // running and paused campaigns shown above the pages (per status; the API's page cap)
const MEMORY_MAX = 50; // campaigns whose figures and chart are kept when another one is opened
const HEALTH_EVERY_MS = 5000;
// The selected campaign's explain answer: asked on its stream's events (at most once a second) and
// every few seconds besides (the live holds, e.g. the PBX or a pacer, change without an event).
const EXPLAIN_EVERY_MS = 3000;
const EXPLAIN_MIN_MS = 1000;
const LOG_MAX = 100;
const CHART_MAX = 600; // 20 minutes of 2 s snapshots
// Following a campaign replays its history (for the log and the failure reasons) only up to this size;
// a bigger one is followed live from the moment it is opened.
const REPLAY_MAX_CONTACTS = 20000;
const STATUSES = ["pending", "originated", "connected", "completed", "failed", "cancelled", "skipped"];
const FINAL = ["completed", "failed", "cancelled", "skipped"];
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
const known = new Map(); // campaign id -> the campaign as last seen (a list, a GET, a snapshot)
let active = []; // ids of the running, then the paused campaigns, newest first in each
const list = { ids: [], total: 0, page: 0, size: 25, status: "", name: "" }; // the page below them
let view = null; // the selected campaign's live state, see select()
// Figures and chart of campaigns followed earlier in this tab, so opening one again (a finished one
// above all) shows what was seen rather than starting blank. Oldest first.
const memory = new Map();

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
  known.clear();
  memory.clear();
  active = [];
  list.ids = [];
  $("active-rows").replaceChildren();
  $("campaign-rows").replaceChildren();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

// ---- PBX state and the dialling-held banner ------------------------------------------------------

// What /health and the stream's snapshots last said. `held` is the daemon's reason for not dialling
// ("pbx_down", "ari_app_replaced", ...) or null; undefined while no report carried it.
const pbx = { connected: null, held: undefined, driver: null };

const HELD = {
  pbx_down: ["Dialling is held: the PBX is unreachable.",
    "No new calls start until dialerd is connected to Asterisk again; it reconnects by itself and running "
    + "campaigns resume then. Calls already up are still followed."],
  ari_app_replaced: ["Dialling is held: another client took over dialerd's ARI application.",
    "Asterisk handed the app name to another connection (a second dialerd with the same settings, or a tool "
    + "listening on /ari/events). dialerd registers the app again and resumes dialling once it is its own; "
    + "stop the other client."],
};

function setPbx(report) {
  if ("connected" in report) pbx.connected = report.connected;
  if (report.held !== undefined) pbx.held = report.held;
  if (report.driver) pbx.driver = report.driver;
  const node = $("pbx");
  node.dataset.connected = pbx.connected === null ? "unknown" : String(pbx.connected);
  const what = pbx.connected === null ? "unknown" : pbx.connected ? "connected" : "disconnected";
  $("pbx-text").textContent = `PBX ${what}${pbx.driver ? ` · ${pbx.driver}` : ""}`;
  renderHeld();
}

function renderHeld() {
  const reason = pbx.held ?? (pbx.connected === false ? "pbx_down" : null);
  const banner = $("held");
  banner.dataset.reports = String(Number(banner.dataset.reports ?? 0) + 1); // PBX reports taken in so far
  banner.hidden = reason === null;
  banner.dataset.reason = reason ?? "";
  if (reason === null) return;
  const [title, text] = HELD[reason] ?? [`Dialling is held (${String(reason).replaceAll("_", " ")}).`,
    "No new calls start until dialerd resumes by itself; see its log and GET /health."];
  $("held-title").textContent = title;
  $("held-text").textContent = text;
}

async function refreshHealth() {
  try {
    const resp = await fetch("health", { cache: "no-store" });
    const body = await resp.json();
    setPbx({ connected: body.pbx?.connected ?? null, held: body.pbx?.dialling_held, driver: body.pbx?.driver });
  } catch {
    setPbx({ connected: null });
  }
}

// ---- the campaign list ----------------------------------------------------------------------------

let listSeq = 0; // answers to an older request (before a page or filter change) are dropped
let listing = false;

function pageQuery() {
  const q = new URLSearchParams({ limit: String(list.size), offset: String(list.page * list.size) });
  if (list.status) q.set("status", list.status);
  if (list.name) q.set("name", list.name);
  return q.toString();
}

async function refreshCampaigns({ force = false } = {}) {
  if (!apiKey || (listing && !force)) return;
  const seq = ++listSeq;
  listing = true;
  try {
    const [running, paused, page] = await Promise.all([
      api("GET", `api/v1/campaigns?status=running&limit=${ACTIVE_MAX}`),
      api("GET", `api/v1/campaigns?status=paused&limit=${ACTIVE_MAX}`),
      api("GET", `api/v1/campaigns?${pageQuery()}`),
    ]);
    if (seq !== listSeq) return;
    if (page.campaigns.length === 0 && page.total > 0 && list.page > 0) {
      // The page emptied under us (campaigns deleted, a narrower filter): show the last one instead.
      list.page = Math.floor((page.total - 1) / list.size);
      listing = false;
      refreshCampaigns({ force: true });
      return;
    }
    for (const c of [...running.campaigns, ...paused.campaigns, ...page.campaigns]) remember(c);
    active = [...running.campaigns, ...paused.campaigns].map((c) => c.id);
    list.ids = page.campaigns.map((c) => c.id);
    list.total = page.total;
    const activeTotal = running.total + paused.total;
    $("active-total").textContent = activeTotal > active.length
      ? `(${fmt(active.length)} of ${fmt(activeTotal)})` : `(${fmt(activeTotal)})`;
    $("campaigns-total").textContent = `(${fmt(page.total)}${list.status || list.name ? " matching" : ""})`;
    $("campaigns-error").textContent = "";
    renderCampaigns();
    const current = view && known.get(view.id);
    if (current) applyCampaign(view, current);
  } catch (err) {
    if (apiKey && seq === listSeq) $("campaigns-error").textContent = `Could not list campaigns: ${err.message}`;
  } finally {
    if (seq === listSeq) listing = false;
  }
}

/** Keeps the freshest copy of a campaign the API returned. */
function remember(c) {
  known.set(c.id, c);
}

function setPage(page) {
  list.page = Math.max(0, page);
  refreshCampaigns({ force: true });
}

function finalCount(contacts) {
  return FINAL.reduce((sum, s) => sum + (contacts[s] ?? 0), 0);
}

function cell(tag, className = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function newRow(id) {
  const tr = cell("tr");
  tr.dataset.campaignId = id;
  tr.dataset.testid = "campaign-row";
  const name = cell("th", "name-col");
  name.scope = "row";
  const open = cell("button", "link name");
  open.type = "button";
  open.dataset.testid = "campaign-name";
  open.addEventListener("click", () => select(id));
  const small = cell("small", "muted id");
  small.textContent = id;
  small.title = id;
  name.append(open, small);
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
  // Long names are cut with an ellipsis (CSS); the whole name is in the tooltip and the label.
  name.firstChild.textContent = c.name;
  name.firstChild.title = c.name;
  name.firstChild.setAttribute("aria-label", `Follow campaign ${c.name}`);
  const badge = status.firstChild;
  badge.textContent = c.status;
  badge.className = `badge cs-${c.status}`;
  tr.dataset.status = c.status;
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

function renderTable(body, ids) {
  const rows = new Map([...body.children].map((tr) => [tr.dataset.campaignId, tr]));
  const wanted = ids.filter((id) => known.has(id)).map((id) => {
    const tr = rows.get(id) ?? newRow(id);
    updateRow(tr, known.get(id));
    return tr;
  });
  // Re-append only when the order changed: moving a row would drop the keyboard focus inside it.
  if (wanted.length !== body.children.length || wanted.some((tr, i) => body.children[i] !== tr)) {
    body.replaceChildren(...wanted);
  }
}

function renderCampaigns() {
  renderTable($("active-rows"), active);
  renderTable($("campaign-rows"), list.ids);
  $("active-empty").hidden = active.length > 0;
  const empty = $("campaigns-empty");
  empty.hidden = list.ids.length > 0;
  empty.textContent = list.status || list.name ? "No campaign matches." : "No campaigns yet.";
  const first = list.total ? list.page * list.size + 1 : 0;
  const last = list.page * list.size + list.ids.length;
  $("page-info").textContent = list.total ? `${fmt(first)}–${fmt(last)} of ${fmt(list.total)}` : "";
  $("page-prev").disabled = list.page === 0;
  $("page-next").disabled = last >= list.total;
}

// ---- the selected campaign ------------------------------------------------------------------------

function closeView() {
  if (view) {
    view.abort.abort();
    keep(view);
  }
  view = null;
  $("detail-body").hidden = true;
  $("detail-placeholder").hidden = false;
}

/** Remembers what `v` showed (figures, chart) for when its campaign is opened again in this tab. */
function keep(v) {
  if (!v.points.length && !v.snapshot && !v.final) return;
  memory.delete(v.id);
  memory.set(v.id, { points: v.points, snapshot: v.snapshot, final: v.final, chartSource: v.chartSource });
  while (memory.size > MEMORY_MAX) memory.delete(memory.keys().next().value);
}

function newHistory() {
  // Rebuilt from the replayed transitions: the chart of a campaign opened after (or late in) its run,
  // and the final figures of a finished one, which gets no more snapshots.
  return { attempts: new Map(), inFlight: 0, completed: 0, failed: 0, originated: 0, ended: 0, answered: 0,
    talkSum: 0, talkN: 0, firstAt: null, lastAt: null, points: [] };
}

function select(id) {
  const c = known.get(id);
  if (!c || view?.id === id) return;
  closeView();
  const kept = memory.get(id);
  view = {
    id,
    name: c.name,
    status: c.status,
    contacts: c.contacts,
    inFlight: c.calls_in_flight,
    snapshot: kept?.snapshot ?? null,
    final: kept?.final ?? null, // figures of a finished campaign, from its whole history
    points: kept ? [...kept.points] : [],
    chartSource: kept?.chartSource ?? "snapshots",
    history: newHistory(),
    snapshots: 0, // snapshots received since opened
    reasons: new Map(),
    reasonsComplete: (c.contacts.total ?? 0) <= REPLAY_MAX_CONTACTS,
    log: [], // newest first
    seen: 0, // the highest event id applied; a reconnect's replay may repeat some
    stream: "connecting",
    ended: false,
    abort: new AbortController(),
    timer: null,
    explain: null, // the last GET .../explain answer
    explainError: "",
    explainedAt: 0,
    explaining: false,
    explainTimer: null,
  };
  $("detail-placeholder").hidden = true;
  $("detail-body").hidden = false;
  $("action-error").textContent = "";
  renderCampaigns();
  renderView(view);
  follow(view);
  askExplain(view, { now: true });
}

/** Asks why the campaign is (not) dialling: at once with `now`, else at most every EXPLAIN_MIN_MS
 * (a burst of events asks once, when it has passed). */
async function askExplain(v, { now = false } = {}) {
  if (v !== view || v.explaining) return;
  const since = Date.now() - v.explainedAt;
  if (!now && since < EXPLAIN_MIN_MS) {
    if (v.explainTimer === null) {
      v.explainTimer = setTimeout(() => { v.explainTimer = null; askExplain(v); }, EXPLAIN_MIN_MS - since);
    }
    return;
  }
  v.explaining = true;
  v.explainedAt = Date.now();
  try {
    v.explain = await api("GET", `api/v1/campaigns/${encodeURIComponent(v.id)}/explain`);
    v.explainError = "";
  } catch (err) {
    v.explainError = err.message;
  } finally {
    v.explaining = false;
    scheduleRender(v);
  }
}

/** Takes a campaign the API just returned (after an action, or at the end) into the lists at once. */
function mergeCampaign(c) {
  remember(c);
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
    if (event !== "campaign") record(v.history, event, data);
    v.log.unshift(logEntry(event, data));
    if (v.log.length > LOG_MAX) v.log.length = LOG_MAX;
  }
  askExplain(v);
  scheduleRender(v);
}

/** One contact transition into the history: attempts (by channel), running totals, a chart point. */
function record(h, kind, d) {
  const t = Date.parse(d.at);
  if (Number.isNaN(t)) return;
  const ch = d.channel_id ?? null;
  if (kind === "originated") {
    if (ch && !h.attempts.has(ch)) {
      h.attempts.set(ch, { answered: false, ended: false });
      h.inFlight += 1;
      h.originated += 1;
      h.firstAt ??= t;
    }
  } else if (kind === "connected") {
    const a = ch && h.attempts.get(ch);
    if (a) a.answered = true;
  } else if (ch) {
    // completed, failed, pending (a retry later) or cancelled: the attempt on this channel ended.
    let a = h.attempts.get(ch);
    if (!a) {
      a = { answered: false, ended: false };
      h.attempts.set(ch, a);
    } else if (!a.ended) {
      h.inFlight = Math.max(0, h.inFlight - 1);
    }
    if (!a.ended) {
      a.ended = true;
      h.ended += 1;
      if (a.answered || kind === "completed") h.answered += 1;
      if (typeof d.talk_seconds === "number") {
        h.talkSum += d.talk_seconds;
        h.talkN += 1;
      }
    }
  }
  if (kind === "completed") h.completed += 1;
  if (kind === "failed") h.failed += 1;
  h.lastAt = Math.max(h.lastAt ?? t, t);
  if (!h.points.length) h.points.push({ t, inFlight: 0, completed: 0, failed: 0 });
  h.points.push({ t, inFlight: h.inFlight, completed: h.completed, failed: h.failed });
}

/** At most `max` of `points`, evenly spread, the first and last always kept. */
function thin(points, max = CHART_MAX) {
  if (points.length <= max) return [...points];
  const step = (points.length - 1) / (max - 1);
  return Array.from({ length: max }, (_, i) => points[Math.round(i * step)]);
}

/** An empty chart takes the history replayed so far (the run before the campaign was opened). */
function seedChart(v) {
  if (v.points.length || !v.reasonsComplete || !v.history.points.length) return;
  v.points = thin(v.history.points, CHART_MAX - 1);
  v.chartSource = "history";
}

function applySnapshot(v, snap) {
  if (v.snapshots === 0) seedChart(v);
  v.snapshots += 1;
  v.snapshot = snap;
  v.final = null;
  v.status = snap.status;
  v.contacts = snap.contacts;
  v.inFlight = snap.calls_in_flight;
  setPbx({
    ...(typeof snap.pbx_connected === "boolean" ? { connected: snap.pbx_connected } : {}),
    held: snap.dialling_held,
  });
  const listed = known.get(v.id);
  if (listed) {
    // The snapshot is fresher than the last poll: keep the list rows in step with the detail.
    Object.assign(listed, { status: snap.status, contacts: snap.contacts, calls_in_flight: snap.calls_in_flight });
    renderCampaigns();
  }
  if (v.chartSource === "history") v.chartSource = "both";
  addPoint(v, Date.parse(snap.at) || Date.now(), snap.calls_in_flight, snap.contacts);
}

function addPoint(v, t, inFlight, contacts) {
  const last = v.points.at(-1);
  v.points.push({ t: Math.max(t, last?.t ?? t), inFlight, completed: contacts.completed ?? 0,
    failed: contacts.failed ?? 0 });
  if (v.points.length > CHART_MAX) v.points.splice(0, v.points.length - CHART_MAX);
}

/** The figures of a finished campaign, from its whole history (null if the history is partial). */
function finalFigures(v) {
  const h = v.history;
  if (!v.reasonsComplete || h.originated === 0 && h.ended === 0) return null;
  const minutes = h.firstAt !== null && h.lastAt > h.firstAt ? (h.lastAt - h.firstAt) / 60000 : null;
  return {
    calls_per_minute: minutes ? Math.round(h.originated / minutes) : h.originated,
    answer_rate: h.ended ? h.answered / h.ended : 0,
    avg_talk_seconds: h.talkN ? h.talkSum / h.talkN : 0,
  };
}

/** After `end`: the final figures from GET (no more snapshots come), and the chart's closing point. */
async function finish(v) {
  try {
    const c = await api("GET", `api/v1/campaigns/${encodeURIComponent(v.id)}`);
    mergeCampaign(c);
    if (v !== view) return;
    applyCampaign(v, c);
    v.final = finalFigures(v) ?? v.final;
    seedChart(v);
    const last = v.points.at(-1);
    const end = Date.parse(c.completed_at ?? "") || last?.t;
    const closed = last && last.t >= end && last.inFlight === c.calls_in_flight
      && last.completed === (c.contacts.completed ?? 0) && last.failed === (c.contacts.failed ?? 0);
    if (last && !closed) addPoint(v, end, c.calls_in_flight, c.contacts);
    keep(v);
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
    case "skipped": return `not dialled: ${(d.reason ?? "skipped").replaceAll("_", " ")}`;
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
  $("detail-title").title = v.name;
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

  // A finished campaign shows its final figures (from its whole history), else the last snapshot's.
  const figures = v.final ?? v.snapshot;
  testId("figures").dataset.source = v.final ? "final" : v.snapshot ? "snapshot" : "none";
  $("cpm-label").textContent = v.final ? "Calls / minute, average" : "Calls / minute";
  testId("calls-in-flight").textContent = fmt(v.inFlight);
  testId("calls-per-minute").textContent = figures ? fmt(figures.calls_per_minute) : "–";
  testId("answer-rate").textContent = figures ? `${Math.round(figures.answer_rate * 100)}%` : "–";
  testId("avg-talk").textContent = figures ? `${Number(figures.avg_talk_seconds).toFixed(1)} s` : "–";

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

  const finished = v.ended || v.status === "completed" || v.status === "failed";
  let empty; // the default: live figures appear while it runs
  if (finished && !v.reasonsComplete) empty = "No chart: this campaign finished before it was opened here and is too big to replay.";
  else if (finished) empty = v.ended ? "No chart: this campaign made no calls." : "Reading the campaign's history…";
  drawChart($("chart"), v.points, empty);
  $("chart-source").textContent = { snapshots: "from the stream's snapshots", history: "from the event history",
    both: "from the event history, then the stream's snapshots" }[v.chartSource];

  renderExplain(v);

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

/** The "why isn't it dialling" panel: explain's headline, then one line per reason in its order. */
function renderExplain(v) {
  const e = v.explain;
  testId("why").dataset.dialling = e ? String(e.dialling) : "unknown";
  if (!e) {
    $("why-state").textContent = v.explainError ? `(${v.explainError})` : "asking…";
    $("why-reasons").replaceChildren();
    return;
  }
  $("why-state").textContent = `${e.dialling ? "dialling" : "not dialling"} · ${fmt(e.pending)} pending · `
    + `${fmt(e.eligible_now)} eligible now` + (v.explainError ? ` (${v.explainError})` : "");
  const items = e.blocked_by.map((b) => {
    const li = cell("li");
    li.dataset.reason = b.reason;
    const label = cell("span", "reason");
    label.textContent = b.reason.replaceAll("_", " ");
    li.append(label);
    if (b.contacts !== undefined) {
      const count = cell("b");
      count.textContent = `${fmt(b.contacts)} contacts`;
      li.append(count);
    }
    if (b.next_at) {
      const until = cell("time", "muted");
      until.dateTime = b.next_at;
      until.textContent = `until ${new Date(b.next_at).toLocaleString()}`;
      li.append(until);
    }
    const detail = Object.entries(b.detail ?? {}).filter(([, value]) => value !== null)
      .map(([key, value]) => `${key.replaceAll("_", " ")} ${value}`).join(", ");
    if (detail) {
      const figures = cell("span", "muted");
      figures.textContent = detail;
      li.append(figures);
    }
    return li;
  });
  if (!items.length) {
    const li = cell("li", "muted");
    li.textContent = e.dialling ? "nothing holds it back" : `nothing of its own: the campaign is ${e.status}`;
    items.push(li);
  }
  $("why-reasons").replaceChildren(...items);
}

async function act(action) {
  const v = view;
  if (!v) return;
  if (action === "stop" && !window.confirm(`Stop “${v.name}”? Its pending contacts are cancelled.`)) return;
  $("action-error").textContent = "";
  try {
    const c = await api("POST", `api/v1/campaigns/${encodeURIComponent(v.id)}/${action}`);
    mergeCampaign(c);
    if (v === view) {
      applyCampaign(v, c);
      askExplain(v);
    }
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
let searchTimer = null;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const name = $("search").value.trim();
    if (name === list.name) return;
    list.name = name;
    setPage(0);
  }, SEARCH_DELAY_MS);
});
$("status-filter").addEventListener("change", () => {
  list.status = $("status-filter").value;
  setPage(0);
});
$("page-size").addEventListener("change", () => {
  list.size = Number($("page-size").value);
  setPage(0);
});
$("page-prev").addEventListener("click", () => setPage(list.page - 1));
$("page-next").addEventListener("click", () => setPage(list.page + 1));

refreshHealth();
setInterval(refreshHealth, HEALTH_EVERY_MS);
setInterval(refreshCampaigns, LIST_EVERY_MS);
setInterval(() => { if (view) askExplain(view); }, EXPLAIN_EVERY_MS);
const saved = sessionStorage.getItem(KEY_STORE);
if (saved) signIn(saved);
else signOut();
