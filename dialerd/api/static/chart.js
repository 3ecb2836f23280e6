// The live chart, drawn by hand as inline SVG: calls in flight on top, completed and failed contacts
// (running totals) below, sharing the time axis. Colours come from dashboard.css classes.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const LEFT = 40;
const RIGHT = 16;
const PANELS = [
  { top: 22, height: 62, title: "calls in flight", series: [["inFlight", "s-flight", true]] },
  {
    top: 122,
    height: 74,
    title: "completed / failed",
    series: [["completed", "s-completed", false], ["failed", "s-failed", false]],
  },
];
const H = 222;
const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].map((s) => s * 1000);

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

/** A round step (1, 2 or 5 times a power of ten) giving about four ticks up to `max`. */
function ticks(max) {
  const rough = Math.max(max, 1) / 4;
  const pow = 10 ** Math.floor(Math.log10(rough));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= rough));
  const top = Math.max(step, Math.ceil(max / step) * step);
  const out = [];
  for (let v = 0; v <= top; v += step) out.push(v);
  return out;
}

function clock(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/**
 * Redraws `svg` from `points`: [{t: epoch ms, inFlight, completed, failed}], oldest first.
 * The number of points drawn is left in svg.dataset.points, the last one in svg.dataset.last (JSON).
 */
export function drawChart(svg, points, emptyText = "Live figures appear here while the campaign runs.") {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.dataset.points = String(points.length);
  svg.dataset.last = points.length ? JSON.stringify(points.at(-1)) : "";
  if (points.length === 0) {
    svg.append(el("text", { x: W / 2, y: H / 2, class: "c-empty", "text-anchor": "middle" },
      emptyText));
    return;
  }
  const t0 = points[0].t;
  const span = Math.max(points.at(-1).t - t0, 10_000); // at least 10 s wide, so one point is not a wall
  const x = (t) => LEFT + ((t - t0) / span) * (W - LEFT - RIGHT);

  for (const panel of PANELS) {
    const max = Math.max(...panel.series.flatMap(([key]) => points.map((p) => p[key])));
    const marks = ticks(max);
    const top = marks.at(-1);
    const y = (v) => panel.top + panel.height - (v / top) * panel.height;
    svg.append(el("text", { x: LEFT, y: panel.top - 8, class: "c-title" }, panel.title));
    for (const v of marks) {
      svg.append(el("line", { x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: v ? "c-grid" : "c-axis" }));
      svg.append(el("text", { x: LEFT - 6, y: y(v) + 4, class: "c-label", "text-anchor": "end" }, String(v)));
    }
    for (const [key, cls, area] of panel.series) {
      const coords = points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`);
      if (area) {
        const base = y(0).toFixed(1);
        const first = x(points[0].t).toFixed(1);
        const last = x(points.at(-1).t).toFixed(1);
        svg.append(el("polygon", { points: `${first},${base} ${coords.join(" ")} ${last},${base}`,
          class: `${cls} c-area` }));
      }
      svg.append(el("polyline", { points: coords.join(" "), class: `${cls} c-line`, "data-series": key }));
      const end = points.at(-1);
      svg.append(el("circle", { cx: x(end.t), cy: y(end[key]), r: 3.5, class: `${cls} c-dot` }));
    }
  }
  const axisY = PANELS.at(-1).top + PANELS.at(-1).height + 18;
  const stepMs = TIME_STEPS.find((s) => span / s <= 6) ?? TIME_STEPS.at(-1);
  for (let ms = 0; ms <= span; ms += stepMs) {
    const anchor = ms === 0 ? "start" : "middle";
    svg.append(el("text", { x: x(t0 + ms), y: axisY, class: "c-label", "text-anchor": anchor }, clock(ms)));
  }
}
