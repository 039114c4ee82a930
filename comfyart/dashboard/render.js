// A task drawn two ways: a row of the compact list (one line a task, for a busy fleet), and a card (its outputs,
// its failure by node, its timings). Both carry data-id, a status badge (data-role=status), Cancel or Retry, and a
// failure's text (data-role=error), or why a queued task waits (data-role=waits). What acts on a task, and what the
// page knows besides its record, come in as `on`: { cancel, retry, toggle, outputs, waits }.

import { ago, clock, duration, h } from "./dom.js";
import { paramsSummary, promptText } from "./summary.js";

export const FINAL = new Set(["completed", "failed", "canceled"]);

function title(task) {
  return task.workflow ? task.workflow : "graph";
}

function action(task, on) {
  return FINAL.has(task.status)
    ? h("button", { class: "quiet small", onclick: () => on.retry(task.id) }, "Retry")
    : h("button", { class: "danger small", onclick: () => on.cancel(task.id) }, "Cancel");
}

// the prompt, and below it the parameters (and what it retries): what tells two runs of a workflow apart
function about(task, className) {
  const prompt = promptText(task);
  const params = [task.retry_of ? `retry of ${task.retry_of.slice(-6)}` : null, paramsSummary(task.params)]
    .filter(Boolean).join(" · ");
  return h("div", { class: className },
    h("span", { class: prompt ? "prompt-text" : "prompt-text muted", title: prompt || null, "data-role": "prompt" },
      prompt || (task.workflow ? "(no prompt)" : "(a graph with no text prompt)")),
    params ? h("span", { class: "params-text", title: params, "data-role": "params" }, params) : null);
}

function timing(task) {
  const started = task.started_ms, finished = task.finished_ms;
  if (started && finished) return `ran ${duration((finished - started) / 1000)}`;
  if (started) return `running ${duration((Date.now() - started) / 1000)}`;
  return "";
}

export function renderRow(task, on) {
  const row = h("article", { class: "task row", dataset: { id: task.id, status: task.status, layout: "row" },
                             title: `${task.id}: click for details`,
                             onclick: (event) => { if (!event.target.closest("button, a")) on.toggle(task.id); } },
    h("span", { class: "cell state" },
      h("span", { class: `badge ${task.status}`, "data-role": "status" }, task.status)),
    h("span", { class: "cell workflow", title: task.workflow ? `${task.workflow} v${task.workflow_version ?? "?"}`
                                                                : "a raw graph" }, title(task)),
    about(task, "cell about"),
    h("span", { class: "cell backend muted", title: task.backend || "not on a backend yet" }, task.backend || "—"),
    h("span", { class: "cell age muted", title: `queued ${clock(task.created_ms)}` }, ago(task.created_ms)),
    FINAL.has(task.status)
      ? h("span", { class: "cell progress muted" }, timing(task) || "—",
          task.outputs && task.outputs.length ? ` · ${task.outputs.length} file${task.outputs.length > 1 ? "s" : ""}` : "")
      : h("span", { class: "cell progress", "data-progress": task.id, "data-compact": "" }),
    h("span", { class: "cell actions" }, action(task, on)));
  const progress = row.querySelector("[data-progress]");
  if (progress) drawProgress(progress, task);
  const failure = describeFailure(task);
  if (failure) row.append(h("div", { class: "failure error", "data-role": "error", title: failure }, failure));
  const waits = waitLine(task, on);
  if (waits) row.append(waits);
  return row;
}

export function renderCard(task, on) {
  const head = h("div", { class: "title" },
    h("span", { class: `badge ${task.status}`, "data-role": "status" }, task.status),
    h("strong", {}, task.workflow ? `${task.workflow} v${task.workflow_version ?? "?"}` : "graph"),
    h("span", { class: "id mono", title: task.id }, task.id),
    task.priority ? h("span", { class: "badge" }, `priority ${task.priority}`) : null);
  if (on.toggle) {
    head.classList.add("collapsible");
    head.title = "click for the compact row";
    head.addEventListener("click", (event) => { if (!event.target.closest("button, a")) on.toggle(task.id); });
  }
  const actions = h("div", { class: "actions" }, action(task, on));
  const meta = h("div", { class: "meta" },
    h("span", {}, `queued ${clock(task.created_ms)}`),
    task.backend ? h("span", {}, `on ${task.backend}`) : null,
    timing(task) ? h("span", {}, timing(task)) : null,
    task.attempts > 1 ? h("span", {}, `${task.attempts} attempts`) : null);
  const card = h("article", { class: "task", dataset: { id: task.id, status: task.status, layout: "card" } },
    head, actions, about(task, "about"));
  if (!FINAL.has(task.status)) {
    const line = h("div", { class: "progress-line", "data-progress": task.id });
    drawProgress(line, task);
    card.append(line);
  }
  card.append(meta);
  const failure = describeFailure(task);
  if (failure) card.append(h("div", { class: "failure error", "data-role": "error" }, failure));
  const waits = waitLine(task, on);
  if (waits) card.append(waits);
  if (task.outputs && task.outputs.length) card.append(on.outputs(task));
  return card;
}

export function drawProgress(line, task) {
  const percent = Math.round(100 * Math.max(0, Math.min(1, task.progress || 0)));
  const compact = line.dataset.compact !== undefined;
  let label;
  if (task.status === "pending") {
    label = task.backend ? (compact ? "next to start" : `queued on ${task.backend}, next to start`)
      : (compact ? "waiting" : "waiting for a backend");
  } else {
    label = `${percent} %` + (task.node && !compact ? ` · node ${task.node}` : "")
      + (task.node_max ? ` · step ${task.node_step ?? 0}/${task.node_max}` : "");
  }
  line.replaceChildren(
    h("div", { class: "bar", role: "progressbar", "aria-valuenow": percent, "aria-valuemin": 0, "aria-valuemax": 100 },
      h("span", { style: { width: `${percent}%` } })),
    h("div", { class: "progress-label" }, label));
}

export function describeFailure(task) {
  if (task.status !== "failed" && !(task.status === "canceled" && task.error)) return null;
  const lines = [task.error || "failed"];
  for (const [node, problem] of Object.entries(task.node_errors || {})) {
    const messages = (problem.errors || []).map((e) => [e.message, e.details].filter(Boolean).join(": "));
    lines.push(`node ${node}${problem.class_type ? ` (${problem.class_type})` : ""}: ${messages.join("; ")}`);
  }
  return lines.join("\n");
}

// a queued task that no backend can run now, and why (GET /api/scheduler's blocked, as on.waits tells it)
function waitLine(task, on) {
  const reason = task.status === "pending" && on.waits ? on.waits(task.id) : null;
  return reason ? h("div", { class: "waits", "data-role": "waits", title: reason }, `waits: ${reason}`) : null;
}
