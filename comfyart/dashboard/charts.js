// The task view's two charts, drawn as SVG from the /api/stats samples (and the live queue events between two).

import { $ } from "./dom.js";

const HOUR_MS = 3600 * 1000;

// Draws both charts; returns the samples of the last hour (the older ones are dropped).
export function drawCharts(all) {
  const now = Date.now();
  const since = now - HOUR_MS;
  const samples = all.filter((s) => s.t >= since);
  const waiting = samples.map((s) => [s.t, s.queued + s.submitted]);
  const running = samples.map((s) => [s.t, s.running]);
  drawChart($("#chart-depth"), [{ points: waiting, css: "var(--warn)" }, { points: running, css: "var(--accent)" }],
            since, now);
  // finished per minute: each sample's counts, summed by minute
  const minutes = new Map();
  for (const s of samples) {
    if (s.live) continue;
    const minute = Math.floor(s.t / 60000) * 60000;
    const slot = minutes.get(minute) || { completed: 0, failed: 0 };
    slot.completed += s.completed || 0;
    slot.failed += s.failed || 0;
    minutes.set(minute, slot);
  }
  const ordered = [...minutes.entries()].sort((a, b) => a[0] - b[0]);
  drawChart($("#chart-throughput"), [
    { points: ordered.map(([t, slot]) => [t + 30000, slot.completed]), css: "var(--ok)" },
    { points: ordered.map(([t, slot]) => [t + 30000, slot.failed]), css: "var(--bad)" }], since, now);
  return samples;
}

function drawChart(svg, series, since, until) {
  const width = svg.clientWidth || 600, height = svg.clientHeight || 150;
  const left = 34, bottom = 18, top = 8, right = 8;
  const highest = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const ceiling = niceCeiling(highest);
  const x = (t) => left + (width - left - right) * (t - since) / (until - since);
  const y = (v) => top + (height - top - bottom) * (1 - v / ceiling);
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs, text) => {
    const element = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
    if (text !== undefined) element.textContent = text;
    return element;
  };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = ceiling * fraction;
    parts.push(node("line", { class: "axis", x1: left, x2: width - right, y1: y(value), y2: y(value) }));
    parts.push(node("text", { x: left - 6, y: y(value) + 3, "text-anchor": "end" }, formatCount(value)));
  }
  for (const minutesAgo of [60, 45, 30, 15, 0]) {
    const t = until - minutesAgo * 60000;
    parts.push(node("text", { x: x(t), y: height - 4, "text-anchor": minutesAgo === 60 ? "start" : minutesAgo ? "middle" : "end" },
                    minutesAgo ? `-${minutesAgo} min` : "now"));
  }
  for (const { points, css } of series) {
    if (!points.length) continue;
    const path = points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    parts.push(node("path", { d: path, fill: "none", stroke: css, "stroke-width": 1.8, "stroke-linejoin": "round" }));
    if (points.length === 1) {
      parts.push(node("circle", { cx: x(points[0][0]), cy: y(points[0][1]), r: 2.5, fill: css }));
    }
  }
  svg.replaceChildren(...parts);
  svg.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
}

function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

function formatCount(value) {
  return value >= 1000 ? `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k` : String(Math.round(value * 10) / 10);
}
