// The comfyart dashboard: plain ES modules, no build step. Everything it shows comes from the REST API and the
// live events WebSocket (/api/events); nothing is reloaded on a timer except the charts' samples and the pool's
// slow-changing figures (VRAM, uptime). Text from the daemon is always set as text, never parsed as HTML.

const KEY_STORAGE = "comfyart.key";
const PAGE_SIZE = 50;
const FINAL = new Set(["completed", "failed", "canceled"]);
const HOUR_MS = 3600 * 1000;

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  admin: true,
  view: null,
  tasks: new Map(),         // id -> task record, of the list and of the submit view
  listed: [],               // ids shown in the task list, in order
  offset: 0,
  total: 0,
  pool: null,
  workflows: [],
  samples: [],              // /api/stats samples, oldest first
  interval: 10,
  depth: null,              // the latest queue event
  thumbs: new Map(),        // "task/file" -> object URL
  loading: new Set(),       // ids whose record is being read for the first time
  stale: new Set(),         // of those, ids that changed meanwhile: read again once loaded
  socket: null,
  retryDelay: 500,
};

// ------------------------------------------------------------------ small helpers
const $ = (selector) => document.querySelector(selector);

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "style") Object.assign(element.style, value); // CSSOM: the page's CSP allows no style attributes
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function toast(message, kind = "error") {
  const note = h("div", { class: `toast ${kind}` }, message);
  $("#toasts").append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

function clock(ms) {
  if (!ms) return "";
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function mib(value) {
  if (value === null || value === undefined) return "?";
  return value >= 1024 ** 3 ? `${(value / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(value / 1024 ** 2)} MiB`;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, { method = "GET", json, form, raw = false } = {}) {
  const headers = {};
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let body;
  if (json !== undefined) { headers["content-type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (error) {
    throw new ApiError(0, "the daemon cannot be reached");
  }
  if (response.status === 401) showLogin(state.key ? "Your key was refused: sign in again." : "");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (error) { /* not JSON */ }
    throw new ApiError(response.status, `${detail} (${response.status})`);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

function complain(error) { toast(error.message || String(error)); }

// ------------------------------------------------------------------ sign-in
function showLogin(message) {
  $("#login").hidden = false;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  const note = $("#login-error");
  note.hidden = !message;
  note.textContent = message || "";
}

async function signIn(key) {
  state.key = key;
  try {
    await api("/api/me");
  } catch (error) {
    state.key = "";
    showLogin(error.status === 401 ? "This key is not valid." : error.message);
    return;
  }
  localStorage.setItem(KEY_STORAGE, key);
  $("#login").hidden = true;
  await start();
}

// ------------------------------------------------------------------ live events
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = state.key ? `?token=${encodeURIComponent(state.key)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/api/events${query}`);
  state.socket = socket;
  socket.onopen = () => {
    state.retryDelay = 500;
    setLive(true);
  };
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (error) { return; }
    onEvent(event);
  };
  socket.onclose = () => {
    setLive(false);
    if (state.socket !== socket) return;
    // events may have been missed while away: re-read what is shown once back
    setTimeout(() => { connect(); refreshView(); }, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 10000);
  };
}

function setLive(on) {
  const live = $("#live");
  live.classList.toggle("off", !on);
  live.textContent = on ? "live" : "offline";
}

function onEvent(event) {
  switch (event.type) {
    case "task": onTaskEvent(event); break;
    case "progress": onProgressEvent(event); break;
    case "pool": if (state.view === "pool") schedulePoolRefresh(); break;
    case "queue": onQueueEvent(event); break;
    case "lagged": break; // the socket closes next, and the view is re-read on reconnect
    default: break;
  }
}

function onTaskEvent(event) {
  const known = state.tasks.get(event.id);
  if (!known && state.loading.has(event.id)) {
    state.stale.add(event.id);
    return;
  }
  if (!known) {
    if (event.previous === null && event.status === "pending" && state.view === "tasks" && state.offset === 0) {
      later.newTasks += 1;
      schedule();
    }
    return;
  }
  const { type, snapshot, previous, ...fields } = event;
  Object.assign(known, fields);
  if (FINAL.has(event.status) || (event.status === "running" && previous !== "running")) {
    later.reread.add(event.id); // the record has what the event leaves out: outputs, errors by node
    schedule();
  }
  redrawTask(event.id);
  if (state.view === "pool" && state.pool) schedule();
}

// A busy cluster sends hundreds of task events a second: what they call for is done at most a few times a second,
// in one request where one does (a new page of the list rather than one read per new task).
const later = { timer: null, newTasks: 0, reread: new Set() };
const BATCH_MS = 250;

function schedule() {
  if (!later.timer) later.timer = setTimeout(flush, BATCH_MS);
}

function flush() {
  later.timer = null;
  const reread = [...later.reread];
  const fresh = later.newTasks;
  later.reread.clear();
  later.newTasks = 0;
  if (state.view === "tasks" && state.offset === 0 && (fresh > 0 || reread.length > 5)) {
    loadTasks().catch(complain);
    for (const id of reread) if (!state.listed.includes(id)) rereadTask(id);
  } else {
    for (const id of reread) rereadTask(id);
  }
  if (state.view === "pool" && state.pool) drawBackends();
}

function onProgressEvent(event) {
  const task = state.tasks.get(event.id);
  if (!task) return; // not shown anywhere: a pool refresh reads the running tasks it shows
  Object.assign(task, { progress: event.progress, node: event.node, node_step: event.node_step,
                        node_max: event.node_max });
  for (const bar of document.querySelectorAll(`[data-progress="${CSS.escape(event.id)}"]`)) {
    drawProgress(bar, state.tasks.get(event.id));
  }
}

function onQueueEvent(event) {
  state.depth = event;
  drawQueueSummary();
  const last = state.samples[state.samples.length - 1];
  state.samples.push({ t: Date.now(), queued: event.queued, submitted: event.submitted, running: event.running,
                       completed: 0, failed: 0, canceled: 0, live: true });
  if (last && last.live && Date.now() - last.t < 1000) state.samples.splice(state.samples.length - 2, 1);
  if (state.view === "tasks") drawCharts();
}

function drawQueueSummary() {
  const depth = state.depth;
  if (!depth) return;
  $("#queue-summary").textContent = `${depth.queued} queued · ${depth.submitted} submitted · ${depth.running} running`;
}

// ------------------------------------------------------------------ tasks
async function loadTasks(append = false) {
  const status = $("#filter-status").value;
  const offset = append ? state.offset + PAGE_SIZE : 0;
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset });
  if (status) query.set("status", status);
  const page = await api(`/api/tasks?${query}`);
  if (!append) { state.listed = []; forgetUnshown(); }
  state.offset = offset;
  state.total = page.total;
  for (const task of page.tasks) {
    state.tasks.set(task.id, { ...state.tasks.get(task.id), ...task, partial: false });
    state.listed.push(task.id);
  }
  drawTaskList();
}

async function firstRead(id) {
  // a task's record read for the first time; an event that arrives meanwhile makes it read again afterwards
  state.loading.add(id);
  try {
    const task = await api(`/api/tasks/${encodeURIComponent(id)}`);
    state.tasks.set(id, task);
    return state.tasks.get(id);
  } finally {
    state.loading.delete(id);
    if (state.stale.delete(id)) setTimeout(() => rereadTask(id), 0);
  }
}

async function addNewTask(id) {
  if (state.listed.includes(id) || state.loading.has(id)) return;
  try {
    const task = await firstRead(id);
    if (!matchesFilter(task) || state.listed.includes(id)) return;
    state.listed.unshift(id);
    state.total += 1;
    $("#task-list").prepend(renderTask(task));
    drawTaskCount();
  } catch (error) { /* gone already, or not ours */ }
}

async function rereadTask(id) {
  try {
    const task = await api(`/api/tasks/${encodeURIComponent(id)}`);
    state.tasks.set(id, task);
    redrawTask(id);
  } catch (error) { /* deleted meanwhile */ }
}

function forgetUnshown() {
  // keep the records something shows: the list, the submit view's tasks, the pool's running tasks
  const shown = new Set(state.listed);
  for (const card of document.querySelectorAll("#submitted .task")) shown.add(card.dataset.id);
  for (const b of state.pool ? state.pool.backends : []) for (const id of b.tasks || []) shown.add(id);
  for (const id of state.tasks.keys()) if (!shown.has(id)) state.tasks.delete(id);
}

function matchesFilter(task) {
  const status = $("#filter-status").value;
  if (status && task.status !== status) return false;
  const text = $("#filter-text").value.trim().toLowerCase();
  if (!text) return true;
  return [task.id, task.workflow, task.backend, task.error].some((v) => v && String(v).toLowerCase().includes(text));
}

function drawTaskList() {
  const list = $("#task-list");
  const shown = state.listed.map((id) => state.tasks.get(id)).filter((task) => task && matchesFilter(task));
  list.replaceChildren(...shown.map(renderTask));
  if (!shown.length) list.append(h("p", { class: "muted center" }, "No tasks here yet."));
  drawTaskCount();
  $("#more-tasks").hidden = state.offset + PAGE_SIZE >= state.total;
}

function drawTaskCount() {
  $("#task-count").textContent = `${state.total} task${state.total === 1 ? "" : "s"}`;
}

function redrawTask(id) {
  const task = state.tasks.get(id);
  for (const card of document.querySelectorAll(`.task[data-id="${CSS.escape(id)}"]`)) {
    card.replaceWith(renderTask(task));
  }
}

function renderTask(task) {
  const title = h("div", { class: "title" },
    h("span", { class: `badge ${task.status}`, "data-role": "status" }, task.status),
    h("strong", {}, task.workflow ? `${task.workflow} v${task.workflow_version ?? "?"}` : "graph"),
    h("span", { class: "id mono", title: task.id }, task.id),
    task.priority ? h("span", { class: "badge" }, `priority ${task.priority}`) : null,
    task.retry_of ? h("span", { class: "muted" }, `retry of ${task.retry_of.slice(-6)}`) : null);
  const actions = h("div", { class: "actions" });
  if (!FINAL.has(task.status)) {
    actions.append(h("button", { class: "danger small", onclick: () => cancelTask(task.id) }, "Cancel"));
  } else {
    actions.append(h("button", { class: "quiet small", onclick: () => retryTask(task.id) }, "Retry"));
  }
  const started = task.started_ms, finished = task.finished_ms;
  const meta = h("div", { class: "meta" },
    h("span", {}, `queued ${clock(task.created_ms)}`),
    task.backend ? h("span", {}, `on ${task.backend}`) : null,
    started && !finished ? h("span", {}, `running for ${duration((Date.now() - started) / 1000)}`) : null,
    started && finished ? h("span", {}, `ran ${duration((finished - started) / 1000)}`) : null,
    task.attempts > 1 ? h("span", {}, `${task.attempts} attempts`) : null);
  const card = h("article", { class: "task", dataset: { id: task.id, status: task.status } }, title, actions);
  if (!FINAL.has(task.status)) {
    const line = h("div", { class: "progress-line", "data-progress": task.id });
    drawProgress(line, task);
    card.append(line);
  }
  card.append(meta);
  const failure = describeFailure(task);
  if (failure) card.append(h("div", { class: "failure error", "data-role": "error" }, failure));
  if (task.outputs && task.outputs.length) card.append(renderOutputs(task));
  return card;
}

function drawProgress(line, task) {
  const percent = Math.round(100 * Math.max(0, Math.min(1, task.progress || 0)));
  const label = task.status === "pending"
    ? (task.backend ? `queued on ${task.backend}, next to start` : "waiting for a backend")
    : `${percent} %` + (task.node ? ` · node ${task.node}` : "")
      + (task.node_max ? ` · step ${task.node_step ?? 0}/${task.node_max}` : "");
  line.replaceChildren(
    h("div", { class: "bar", role: "progressbar", "aria-valuenow": percent, "aria-valuemin": 0, "aria-valuemax": 100 },
      h("span", { style: { width: `${percent}%` } })),
    h("div", { class: "progress-label" }, label));
}

function describeFailure(task) {
  if (task.status !== "failed" && !(task.status === "canceled" && task.error)) return null;
  const lines = [task.error || "failed"];
  for (const [node, problem] of Object.entries(task.node_errors || {})) {
    const messages = (problem.errors || []).map((e) => [e.message, e.details].filter(Boolean).join(": "));
    lines.push(`node ${node}${problem.class_type ? ` (${problem.class_type})` : ""}: ${messages.join("; ")}`);
  }
  return lines.join("\n");
}

function outputUrl(taskId, filename) {
  return `/api/tasks/${encodeURIComponent(taskId)}/outputs/${encodeURIComponent(filename)}`;
}

async function blobUrl(taskId, filename) {
  const cacheKey = `${taskId}/${filename}`;
  if (!state.thumbs.has(cacheKey)) {
    const promise = api(outputUrl(taskId, filename), { raw: true })
      .then((response) => response.blob()).then((blob) => URL.createObjectURL(blob));
    promise.catch(() => state.thumbs.delete(cacheKey));
    state.thumbs.set(cacheKey, promise);
  }
  return state.thumbs.get(cacheKey);
}

const thumbnails = new IntersectionObserver((entries, observer) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const image = entry.target;
    observer.unobserve(image);
    blobUrl(image.dataset.task, image.dataset.file).then((url) => { image.src = url; }, complain);
  }
}, { rootMargin: "200px" });

function renderOutputs(task) {
  const box = h("div", { class: "outputs" });
  for (const output of task.outputs) {
    if ((output.content_type || "").startsWith("image/")) {
      const image = h("img", { class: "thumb", alt: output.filename, title: output.filename,
                               dataset: { task: task.id, file: output.filename },
                               onclick: () => openImage(task.id, output.filename) });
      thumbnails.observe(image); // fetched once it scrolls into view: a busy list turns over many thumbnails
      box.append(image);
    } else {
      box.append(h("a", { class: "file-link", href: "#", onclick: (event) => { event.preventDefault();
        download(task.id, output.filename); } }, output.filename));
    }
  }
  return box;
}

async function openImage(taskId, filename) {
  const url = await blobUrl(taskId, filename);
  const dialog = $("#lightbox");
  dialog.querySelector("img").src = url;
  dialog.querySelector("img").alt = filename;
  const link = $("#lightbox-download");
  link.href = url;
  link.download = filename;
  dialog.showModal();
}

async function download(taskId, filename) {
  try {
    const url = await blobUrl(taskId, filename);
    const link = h("a", { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (error) { complain(error); }
}

async function cancelTask(id) {
  try {
    const task = await api(`/api/tasks/${encodeURIComponent(id)}`, { method: "DELETE" });
    Object.assign(state.tasks.get(id) || {}, task);
    redrawTask(id);
  } catch (error) { complain(error); }
}

async function retryTask(id) {
  try {
    const created = await api(`/api/tasks/${encodeURIComponent(id)}/retry`, { method: "POST" });
    toast(`queued again as ${created.id}`, "info");
    if (state.view === "tasks") addNewTask(created.id);
    else showSubmitted(created.id);
  } catch (error) { complain(error); }
}

// ------------------------------------------------------------------ charts
async function loadStats() {
  try {
    const stats = await api("/api/stats?window_s=3600");
    state.interval = stats.interval_s;
    state.samples = stats.samples;
    const latest = stats.samples[stats.samples.length - 1];
    if (!state.depth && latest) { state.depth = latest; drawQueueSummary(); }
  } catch (error) {
    if (error.status !== 404) complain(error);
  }
  drawCharts();
}

function drawCharts() {
  const now = Date.now();
  const since = now - HOUR_MS;
  const samples = state.samples.filter((s) => s.t >= since);
  state.samples = samples;
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

// ------------------------------------------------------------------ submit
async function loadWorkflows() {
  const select = $("#submit-workflow");
  const previous = select.value;
  const { workflows } = await api("/api/workflows");
  state.workflows = workflows;
  select.replaceChildren(...workflows.map((w) => h("option", { value: w.name }, w.name)));
  if (!workflows.length) {
    select.append(h("option", { value: "" }, "no workflows stored"));
  }
  if (previous && workflows.some((w) => w.name === previous)) select.value = previous;
  await showWorkflow(select.value);
}

let shownWorkflow = null;

async function showWorkflow(name) {
  shownWorkflow = name; // of two quick choices, only the last one's form is drawn
  const box = $("#submit-params");
  if (!name) { box.replaceChildren(); delete box.dataset.workflow; $("#submit-description").textContent = ""; return; }
  const workflow = await api(`/api/workflows/${encodeURIComponent(name)}`);
  const drawn = `${name}@${workflow.version}`;
  // a re-read (a reconnect, a second visit) keeps what the user typed unless the workflow changed
  if (shownWorkflow !== name || box.dataset.drawn === drawn) return;
  $("#submit-description").textContent = workflow.description || "";
  box.replaceChildren(...Object.entries(workflow.params || {}).map(([param, spec]) => renderParam(param, spec)));
  box.dataset.workflow = name;
  box.dataset.drawn = drawn;
}

function renderParam(name, spec) {
  const id = `param-${name}`;
  const hint = [spec.description, spec.min !== null && spec.min !== undefined ? `min ${spec.min}` : null,
                spec.max !== null && spec.max !== undefined ? `max ${spec.max}` : null].filter(Boolean).join(" · ");
  const caption = `${name}${spec.required ? " *" : ""}`;
  let input;
  const common = { id, name, "data-param": name, "data-type": spec.type, required: spec.required || null };
  switch (spec.type) {
    case "int":
    case "float":
      input = h("input", { ...common, type: "number", step: spec.type === "int" ? 1 : "any", min: spec.min ?? null,
                           max: spec.max ?? null, placeholder: spec.default ?? "default" });
      break;
    case "bool":
      input = h("input", { ...common, type: "checkbox", checked: spec.default === true });
      return h("label", { class: "check", for: id }, input, caption, hint ? h("span", { class: "hint" }, hint) : null);
    case "choice":
      input = h("select", common, h("option", { value: "" }, spec.default !== null && spec.default !== undefined
        ? `default (${spec.default})` : "default"),
      ...(spec.choices || []).map((choice) => h("option", { value: JSON.stringify(choice) }, String(choice))));
      break;
    case "image":
      input = h("input", { ...common, type: "file", accept: "image/*" });
      break;
    default:
      input = h("textarea", { ...common, rows: 2, placeholder: spec.default ?? "" });
  }
  const wide = spec.type === "string" ? "wide" : null;
  return h("label", { for: id, class: wide }, caption, input, hint ? h("span", { class: "hint" }, hint) : null);
}

async function submitWorkflow(event) {
  event.preventDefault();
  const name = $("#submit-workflow").value;
  if (!name) return;
  const form = new FormData();
  const params = {};
  for (const input of document.querySelectorAll("#submit-params [data-param]")) {
    const param = input.dataset.param;
    switch (input.dataset.type) {
      case "image": if (input.files.length) form.append(param, input.files[0]); break;
      case "bool": params[param] = input.checked; break;
      case "int": case "float": if (input.value !== "") params[param] = Number(input.value); break;
      case "choice": if (input.value !== "") params[param] = JSON.parse(input.value); break;
      default: if (input.value !== "") params[param] = input.value;
    }
  }
  form.append("params", JSON.stringify(params));
  form.append("priority", $("#submit-priority").value);
  const error = $("#submit-error");
  error.hidden = true;
  const button = $("#submit-run");
  button.disabled = true;
  try {
    const created = await api(`/api/workflows/${encodeURIComponent(name)}/run`, { method: "POST", form });
    await showSubmitted(created.id);
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function showSubmitted(id) {
  $("#submitted").prepend(renderTask(await firstRead(id)));
}

// ------------------------------------------------------------------ pool
let poolTimer = null;

function schedulePoolRefresh() {
  if (poolTimer) return;
  poolTimer = setTimeout(() => { poolTimer = null; loadPool().catch(complain); }, 300);
}

async function loadPool() {
  state.pool = await api("/api/pool");
  const running = state.pool.backends.flatMap((b) => b.tasks || []).filter((id) => !state.tasks.has(id));
  await Promise.all(running.map((id) => api(`/api/tasks/${encodeURIComponent(id)}`)
    .then((task) => state.tasks.set(id, task), () => null)));
  drawPool();
}

function drawPool() {
  const pool = state.pool;
  const config = pool.config;
  for (const [field, id] of [["min_containers", "#scale-min"], ["max_containers", "#scale-max"], ["target", "#scale-target"]]) {
    const input = $(id);
    if (document.activeElement !== input) input.value = config[field] ?? "";
  }
  const decision = pool.autoscaler;
  $("#autoscaler").textContent = decision
    ? `Autoscaler: ${decision.desired} wanted (${decision.reason})${decision.limited_by.length ? `, limited by ${decision.limited_by.join(", ")}` : ""}`
      + (Object.keys(config.overridden).length ? ` · set at run time: ${Object.keys(config.overridden).join(", ")}` : "")
    : "Autoscaler: no decision yet";
  $("#hosts").replaceChildren(...pool.hosts.map((host) => h("div", { class: "card" },
    h("div", { class: "head" }, h("span", { class: "name" }, host.name),
      h("span", { class: `badge ${host.down ? "down" : "healthy"}` }, host.down ? "down" : host.kind)),
    h("dl", { class: "facts" },
      h("dt", {}, "address"), h("dd", {}, host.address || "local"),
      h("dt", {}, "GPUs"), h("dd", {}, host.gpus.length ? host.gpus.join(", ") : "none"),
      h("dt", {}, "containers"), h("dd", {}, String(host.containers)),
      h("dt", {}, "free slots"), h("dd", {}, String(host.free_slots)),
      host.down ? [h("dt", {}, "problem"), h("dd", { class: "error" }, host.down)] : null))));
  if (!pool.hosts.length) $("#hosts").append(h("p", { class: "muted" }, "No Docker or process hosts configured."));
  drawBackends();
  $("#pool-errors").replaceChildren(...pool.recent_errors.slice(-10).reverse().map((e) =>
    h("li", {}, `${clock(e.at_ms)} ${e.id}${e.host ? ` on ${e.host}` : ""}: ${e.error}`)));
  if (!pool.recent_errors.length) $("#pool-errors").append(h("li", {}, "none"));
}

function drawBackends() {
  const box = $("#backends");
  box.replaceChildren(...state.pool.backends.map(renderBackend));
  if (!state.pool.backends.length) box.append(h("p", { class: "muted" }, "No backends yet."));
}

function renderBackend(b) {
  const used = b.vram_total && b.vram_free !== null ? b.vram_total - b.vram_free : null;
  const vram = b.vram_total
    ? h("div", {}, h("div", { class: "bar vram", title: "VRAM used" },
        h("span", { style: { width: `${Math.round(100 * used / b.vram_total)}%` } })),
      h("div", { class: "progress-label" }, `VRAM ${mib(used)} used · ${mib(b.vram_free)} free of ${mib(b.vram_total)}`))
    : h("div", { class: "progress-label" }, "VRAM: not reported");
  const inflight = h("div", { class: "inflight" });
  for (const id of b.tasks || []) {
    const task = state.tasks.get(id) || { id, status: "running" };
    const line = h("div", { "data-progress": id });
    drawProgress(line, task);
    inflight.append(h("div", {}, h("span", { class: "mono" }, task.workflow ? `${task.workflow} · ${id}` : id), line));
  }
  const action = (name, label, style = "quiet") => h("button", { class: `${style} small`, "data-action": name,
    onclick: () => controlBackend(b.id, name) }, label);
  return h("article", { class: "card backend", dataset: { backend: b.id, status: b.status, mode: b.mode,
                                                                     created: b.created_ms } },
    h("div", { class: "head" },
      h("span", { class: "name", title: b.url }, b.name || b.id),
      h("span", {}, h("span", { class: `badge ${b.status}` }, b.status), " ",
        h("span", { class: `badge ${b.mode === "active" ? "accepting" : b.mode}`, "data-role": "mode" }, b.mode))),
    h("dl", { class: "facts" },
      h("dt", {}, "kind"), h("dd", {}, `${b.kind}${b.host ? ` on ${b.host}` : ""}`),
      h("dt", {}, "GPU"), h("dd", {}, b.gpu ?? "none"),
      h("dt", {}, "in flight"), h("dd", {}, String(b.inflight)),
      h("dt", {}, "tasks done"), h("dd", {}, String(b.tasks_done)),
      h("dt", {}, "uptime"), h("dd", {}, duration(b.age_s)),
      b.tags.length ? [h("dt", {}, "tags"), h("dd", {}, b.tags.join(", "))] : null,
      b.drain_reason ? [h("dt", {}, "draining"), h("dd", {}, b.drain_reason)] : null,
      b.error ? [h("dt", {}, "error"), h("dd", { class: "error" }, b.error)] : null),
    vram, inflight,
    h("div", { class: "actions" },
      b.mode === "active" ? action("drain", "Drain") : action("enable", "Enable"),
      b.mode === "active" ? action("disable", "Disable") : null,
      b.kind !== "static" ? action("recycle", "Recycle") : null,
      b.kind !== "static" ? h("button", { class: "quiet small", onclick: () => showLogs(b.id) }, "Logs") : null));
}

async function controlBackend(id, action) {
  try {
    await api(`/api/pool/backends/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    toast(`${id}: ${action}`, "info");
    await loadPool();
  } catch (error) { complain(error); }
}

async function showLogs(id) {
  const dialog = $("#log-dialog");
  dialog.querySelector("h3").textContent = `${id}: last 200 lines`;
  const pre = dialog.querySelector("pre");
  const load = async () => {
    pre.textContent = "…";
    try {
      const { lines } = await api(`/api/pool/backends/${encodeURIComponent(id)}/logs?lines=200`);
      pre.textContent = lines.join("\n") || "(empty)";
      pre.scrollTop = pre.scrollHeight;
    } catch (error) { pre.textContent = error.message; }
  };
  $("#log-refresh").onclick = load;
  dialog.showModal();
  await load();
}

async function setScale(event, reset = false) {
  event.preventDefault();
  const read = (id) => ($(id).value === "" ? null : Number($(id).value));
  const body = reset ? { min_containers: null, max_containers: null, target: null }
    : { min_containers: read("#scale-min"), max_containers: read("#scale-max"), target: read("#scale-target") };
  try {
    await api("/api/pool/scale", { method: "POST", json: body });
    toast(reset ? "scale limits back to the configuration" : "scale limits set", "info");
    await loadPool();
  } catch (error) { complain(error); }
}

// ------------------------------------------------------------------ views
let slowTimer = null;

async function showView(name) {
  if (name === "pool" && !state.admin) name = "tasks";
  state.view = name;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  clearInterval(slowTimer);
  await refreshView();
  // what no event announces: the charts' new samples, a pool's VRAM and uptime
  slowTimer = setInterval(() => {
    if (state.view === "tasks") loadStats();
    if (state.view === "pool") loadPool().catch(complain);
  }, name === "pool" ? 5000 : Math.max(5000, state.interval * 1000));
}

async function refreshView() {
  try {
    if (state.view === "tasks") await Promise.all([loadTasks(), loadStats()]);
    if (state.view === "submit") await loadWorkflows();
    if (state.view === "pool") await loadPool();
  } catch (error) { complain(error); }
}

async function start() {
  try {
    const me = await api("/api/me");
    state.admin = me.role === "admin";
    $("#sign-out").title = `signed in as ${me.name} (${me.role})`;
  } catch (error) {
    if (error.status !== 401) complain(error);
    return;
  }
  for (const link of document.querySelectorAll("[data-admin]")) link.hidden = !state.admin;
  $("#sign-out").hidden = !state.key;
  if (!state.socket) connect();
  await showView((location.hash || "#tasks").slice(1));
}

function wire() {
  window.addEventListener("hashchange", () => showView(location.hash.slice(1) || "tasks"));
  $("#login-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("#login-key").value.trim()); });
  $("#sign-out").addEventListener("click", () => { localStorage.removeItem(KEY_STORAGE); location.reload(); });
  $("#filter-status").addEventListener("change", () => loadTasks().catch(complain));
  $("#filter-text").addEventListener("input", drawTaskList);
  $("#more-tasks").addEventListener("click", () => loadTasks(true).catch(complain));
  $("#submit-workflow").addEventListener("change", (event) => showWorkflow(event.target.value).catch(complain));
  $("#submit-form").addEventListener("submit", submitWorkflow);
  $("#scale-form").addEventListener("submit", (event) => setScale(event));
  $("#scale-reset").addEventListener("click", (event) => setScale(event, true));
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog || event.target.value === "close") dialog.close();
    });
  }
  window.addEventListener("resize", () => { if (state.view === "tasks") drawCharts(); });
}

wire();
start();
