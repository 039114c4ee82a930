// The comfyart dashboard: plain ES modules, no build step. Everything it shows comes from the REST API and the
// live events WebSocket (/api/events); nothing is reloaded on a timer except the charts' samples and the pool's
// slow-changing figures (VRAM, uptime). Text from the daemon is always set as text, never parsed as HTML.
// Modules: dom.js (helpers), summary.js (a task's prompt and parameters, a form's defaults), render.js (a task as
// a row or a card), charts.js (the task view's charts), inventory.js (what the backends hold); this one holds the
// state, the requests and the views.

import { drawCharts } from "./charts.js";
import { $, clock, duration, h, mib, toast } from "./dom.js";
import { renderInventory, renderModels } from "./inventory.js";
import { FINAL, drawProgress, renderCard, renderRow } from "./render.js";
import { leaderLine, renderReplicas } from "./replicas.js";
import { firstRunnable, matchesText, paramDefault, promptText, shiftCounts } from "./summary.js";

const KEY_STORAGE = "comfyart.key";
const LAYOUT_STORAGE = "comfyart.taskLayout";
const PAGE_SIZE = 50;

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  admin: true,
  view: null,
  layout: localStorage.getItem(LAYOUT_STORAGE) === "cards" ? "cards" : "list", // the task list: rows or cards
  expanded: new Set(),      // ids the list shows as a card while the others are rows
  tasks: new Map(),         // id -> task record, of the list and of the submit view
  listed: [],               // ids shown in the task list, in order
  offset: 0,
  total: 0,
  counts: null,             // the header's { waiting, running, detail }: null until first read
  pool: null,
  blocked: new Map(),       // queued task id -> why no backend can run it now (GET /api/scheduler, admins)
  decision: null,           // the autoscaler's latest decision, from /api/pool or its event, whichever is newer
  workflows: [],
  countsSeen: 0,            // queue events so far: a count read before the latest one is older than it
  samples: [],              // /api/stats samples, oldest first
  interval: 10,
  thumbs: new Map(),        // "task/file" -> object URL
  loading: new Set(),       // ids whose record is being read for the first time
  stale: new Set(),         // of those, ids that changed meanwhile: read again once loaded
  socket: null,
  retryDelay: 500,
};

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
    // events may have been missed while away: re-read what is shown, and the counts, once back
    setTimeout(() => { connect(); refreshView(); loadCounts(); }, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 10000);
  };
}

function setLive(on) {
  const live = $("#live");
  live.classList.remove("wait");
  live.classList.toggle("off", !on);
  live.textContent = on ? "live" : "offline";
}

function onEvent(event) {
  switch (event.type) {
    case "task": onTaskEvent(event); break;
    case "progress": onProgressEvent(event); break;
    case "pool": if (state.view === "pool") schedulePoolRefresh(); break;
    case "autoscaler": onDecision(event); break;
    case "queue": onQueueEvent(event); break;
    case "lagged": break; // the socket closes next, and the view is re-read on reconnect
    default: break;
  }
}

function onTaskEvent(event) {
  if (!event.snapshot && event.previous !== undefined) { // the header moves with the list, before the next count
    state.counts = shiftCounts(state.counts, event.previous, event.status);
    drawQueueSummary();
  }
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
  if (state.view === "tasks") scheduleBlocked();
  if (state.admin) { // the queue events count the whole fleet: the list an admin sees, not a client's
    state.counts = { waiting: event.queued + event.submitted, running: event.running,
                     detail: `${event.queued} queued for a backend, ${event.submitted} submitted and not started` };
    state.countsSeen += 1;
    drawQueueSummary();
  }
  const last = state.samples[state.samples.length - 1];
  state.samples.push({ t: Date.now(), queued: event.queued, submitted: event.submitted, running: event.running,
                       completed: 0, failed: 0, canceled: 0, live: true });
  if (last && last.live && Date.now() - last.t < 1000) state.samples.splice(state.samples.length - 2, 1);
  if (state.view === "tasks") state.samples = drawCharts(state.samples);
}

// The header's counts, read as the task list counts them (a client: its own tasks), until events move them: the
// list's pending are those waiting for a backend and those submitted and not started.
async function loadCounts() {
  const seen = state.countsSeen;
  const total = async (status) => (await api(`/api/tasks?status=${status}&limit=1`)).total;
  try {
    const [waiting, running] = await Promise.all([total("pending"), total("running")]);
    if (state.countsSeen !== seen) return; // an event counted meanwhile: it is newer
    state.counts = { waiting, running, detail: `${waiting} pending: queued or submitted and not started` };
    drawQueueSummary();
  } catch (error) { /* the list shows the problem */ }
}

function drawQueueSummary() {
  const counts = state.counts;
  const summary = $("#queue-summary");
  summary.classList.toggle("wait", !counts);
  summary.textContent = counts ? `${counts.waiting} waiting · ${counts.running} running` : "connecting…";
  summary.title = counts ? `${counts.detail}; ${counts.running} running${state.admin ? "" : " (your tasks)"}` : "";
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

// Why queued tasks wait (admins: the scheduler's view of the whole queue); read with the list, on the slow timer,
// and a second after the queue moves. Only the tasks whose reason changed are drawn again.
let blockedTimer = null;

function scheduleBlocked() {
  if (state.admin && !blockedTimer) blockedTimer = setTimeout(() => { blockedTimer = null; loadBlocked(); }, 1000);
}

async function loadBlocked() {
  if (!state.admin) return;
  let scheduler;
  try { scheduler = await api("/api/scheduler"); } catch (error) { return; } // the list shows the daemon's state
  const blocked = new Map(scheduler.blocked.map((b) => [b.task, b.reason]));
  const changed = [...new Set([...blocked.keys(), ...state.blocked.keys()])]
    .filter((id) => blocked.get(id) !== state.blocked.get(id));
  state.blocked = blocked;
  for (const id of changed) if (state.tasks.has(id)) redrawTask(id);
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
    drawTaskList();
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
  return matchesText(task, $("#filter-text").value.trim().toLowerCase());
}

function drawTaskList() {
  const list = $("#task-list");
  const shown = state.listed.map((id) => state.tasks.get(id)).filter((task) => task && matchesFilter(task));
  list.replaceChildren(...shown.map((task) => renderTask(task, list)));
  if (!shown.length) list.append(h("p", { class: "muted center" }, "No tasks here yet."));
  else if (state.layout === "list") {
    list.prepend(h("div", { class: "rows-head", "aria-hidden": "true" }, ...["status", "workflow", "prompt · parameters",
      "backend", "queued", "progress", ""].map((name) => h("span", {}, name))));
  }
  drawTaskCount();
  $("#more-tasks").hidden = state.offset + PAGE_SIZE >= state.total;
}

function drawTaskCount() {
  $("#task-count").textContent = `${state.total} task${state.total === 1 ? "" : "s"}`;
}

function redrawTask(id) {
  const task = state.tasks.get(id);
  for (const card of document.querySelectorAll(`.task[data-id="${CSS.escape(id)}"]`)) {
    card.replaceWith(renderTask(task, card.parentElement));
  }
}

// A task as the container it goes in shows it: the list, rows (a card while expanded) or cards; the submit view,
// cards (a few tasks, their pictures)
function renderTask(task, container) {
  if (container && container.id === "task-list") {
    const on = { ...taskActions, toggle: toggleTask };
    return state.layout === "list" && !state.expanded.has(task.id) ? renderRow(task, on)
      : renderCard(task, state.layout === "list" ? on : { ...taskActions });
  }
  return renderCard(task, taskActions);
}

const taskActions = { cancel: (id) => cancelTask(id), retry: (id) => retryTask(id), outputs: (task) => renderOutputs(task),
                      waits: (id) => state.blocked.get(id) };

function toggleTask(id) {
  if (!state.expanded.delete(id)) state.expanded.add(id);
  redrawTask(id);
}

function setLayout(layout) {
  state.layout = layout;
  localStorage.setItem(LAYOUT_STORAGE, layout);
  state.expanded.clear();
  drawLayoutSwitch();
  drawTaskList();
}

function drawLayoutSwitch() {
  for (const button of document.querySelectorAll("#task-layout button")) {
    button.setAttribute("aria-pressed", String(button.dataset.layout === state.layout));
  }
  $("#task-list").dataset.layout = state.layout;
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
  } catch (error) {
    if (error.status !== 404) complain(error);
  }
  state.samples = drawCharts(state.samples);
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
  // the user's last choice stays; else the first workflow that runs without a file
  const first = firstRunnable(workflows);
  if (previous && workflows.some((w) => w.name === previous)) select.value = previous;
  else if (first) select.value = first.name;
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
  box.replaceChildren(...Object.entries(workflow.params || {})
    .map(([param, spec]) => renderParam(param, spec, paramDefault(param, spec, workflow.graph))));
  box.dataset.workflow = name;
  box.dataset.drawn = drawn;
}

// A parameter's field: left empty, the parameter takes its default, which the field shows (as its placeholder, its
// first choice, its checkbox)
function renderParam(name, spec, fallback) {
  const id = `param-${name}`;
  const hint = [spec.description, spec.min !== null && spec.min !== undefined ? `min ${spec.min}` : null,
                spec.max !== null && spec.max !== undefined ? `max ${spec.max}` : null].filter(Boolean).join(" · ");
  const caption = `${name}${spec.required ? " *" : ""}`;
  const shown = fallback === null ? null : String(fallback);
  let input;
  const common = { id, name, "data-param": name, "data-type": spec.type, required: spec.required || null };
  switch (spec.type) {
    case "int":
    case "float":
      input = h("input", { ...common, type: "number", step: spec.type === "int" ? 1 : "any", min: spec.min ?? null,
                           max: spec.max ?? null, placeholder: shown });
      break;
    case "bool":
      input = h("input", { ...common, type: "checkbox", checked: fallback === true });
      return h("label", { class: "check", for: id }, input, caption, hint ? h("span", { class: "hint" }, hint) : null);
    case "choice":
      input = h("select", common, h("option", { value: "" }, shown === null ? "(the graph's)" : `${shown} (default)`),
        ...(spec.choices || []).filter((choice) => String(choice) !== shown)
          .map((choice) => h("option", { value: JSON.stringify(choice) }, String(choice))));
      break;
    case "image":
      input = h("input", { ...common, type: "file", accept: "image/*" });
      break;
    default:
      input = h("textarea", { ...common, rows: 2, placeholder: shown });
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
  $("#submitted").prepend(renderTask(await firstRead(id), $("#submitted")));
}

// ------------------------------------------------------------------ pool
let poolTimer = null;

function schedulePoolRefresh() {
  if (poolTimer) return;
  poolTimer = setTimeout(() => { poolTimer = null; loadPool().catch(complain); }, 300);
}

let poolReads = 0;

async function loadPool() {
  const read = ++poolReads;
  // the replicas are read beside the pool; a daemon with no registry answers 404, and then none are drawn
  const [pool, cluster] = await Promise.all([api("/api/pool"), api("/api/cluster").catch(() => null)]);
  if (read !== poolReads) return; // a later read was sent meanwhile: its answer is the one to draw
  state.pool = pool;
  state.cluster = cluster;
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
  onDecision(pool.autoscaler);
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
  $("#replicas").replaceChildren(...renderReplicas(state.cluster));
  $("#replicas-line").textContent = leaderLine(state.cluster);
  drawBackends();
  loadModels().catch(complain);
  $("#pool-errors").replaceChildren(...pool.recent_errors.slice(-10).reverse().map((e) =>
    h("li", {}, `${clock(e.at_ms)} ${e.id}${e.host ? ` on ${e.host}` : ""}: ${e.error}`)));
  if (!pool.recent_errors.length) $("#pool-errors").append(h("li", {}, "none"));
}

// The autoscaler decides on its own clock (a second after the load moves, and every health round): its decisions
// come as events, and with each read of the pool; the newer one is shown.
function onDecision(decision) {
  if (decision && !(state.decision && state.decision.at_ms > decision.at_ms)) state.decision = decision;
  if (state.pool) drawDecision();
}

function drawDecision() {
  const decision = state.decision;
  const overridden = Object.keys(state.pool.config.overridden);
  const line = $("#autoscaler");
  line.dataset.at = decision ? decision.at_ms : "";
  line.textContent = decision
    ? `Autoscaler, ${clock(decision.at_ms)}: ${decision.desired} wanted. ${decision.reason}`
      + (decision.limited_by.length ? `; limited by ${decision.limited_by.join(", ")}` : "")
    : "Autoscaler: no decision yet";
  if (overridden.length) line.append(h("span", { class: "note" }, ` · set at run time: ${overridden.join(", ")}`));
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
    const about = [task.workflow, promptText(task)].filter(Boolean).join(": ");
    inflight.append(h("div", {}, h("span", { class: "inflight-task", title: id }, about || id), line));
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
    vram, inflight, renderInventory(b.inventory, (button) => refreshInventory(b.id, button)),
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

// the backend's nodes and models read again now (after a model was copied onto it); a backend that does not answer
// says why in a toast
async function refreshInventory(id, button) {
  if (button) button.disabled = true;
  try {
    const backend = await api(`/api/pool/backends/${encodeURIComponent(id)}/refresh`, { method: "POST" });
    toast(`${id}: inventory read, ${backend.inventory.models} models`, "info");
  } catch (error) { complain(error); }
  await loadPool().catch(complain);
}

async function refreshAll(button) {
  button.disabled = true;
  try {
    const pool = await api("/api/pool/refresh", { method: "POST" });
    const failed = Object.entries(pool.failed);
    toast(`${pool.refreshed} inventories read` + (failed.length ? `; not answered: ${failed.map(([id]) => id).join(", ")}` : ""),
      failed.length ? "error" : "info");
  } catch (error) { complain(error); }
  button.disabled = false;
  await loadPool().catch(complain);
}

// the models panel is read only while it is open: on a big fleet its answer is the largest the pool view asks for
let modelReads = 0;

async function loadModels() {
  const panel = $("#models-panel");
  if (!panel.open) return;
  const read = ++modelReads;
  const text = $("#models-find").value.trim();
  const listing = await api(`/api/models${text ? `?${new URLSearchParams({ q: text })}` : ""}`);
  if (read !== modelReads) return;
  $("#models-count").textContent = `${listing.count} model${listing.count === 1 ? "" : "s"}`;
  $("#models").replaceChildren(...renderModels(listing));
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
    if (state.view === "tasks") { loadStats(); loadBlocked(); }
    if (state.view === "pool") loadPool().catch(complain);
  }, name === "pool" ? 5000 : Math.max(5000, state.interval * 1000));
}

async function refreshView() {
  try {
    if (state.view === "tasks") await Promise.all([loadTasks(), loadStats(), loadBlocked()]);
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
  loadCounts();
  await showView((location.hash || "#tasks").slice(1));
}

function wire() {
  window.addEventListener("hashchange", () => showView(location.hash.slice(1) || "tasks"));
  $("#login-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("#login-key").value.trim()); });
  $("#sign-out").addEventListener("click", () => { localStorage.removeItem(KEY_STORAGE); location.reload(); });
  $("#filter-status").addEventListener("change", () => loadTasks().catch(complain));
  $("#filter-text").addEventListener("input", drawTaskList);
  for (const button of document.querySelectorAll("#task-layout button")) {
    button.addEventListener("click", () => setLayout(button.dataset.layout));
  }
  drawLayoutSwitch();
  $("#more-tasks").addEventListener("click", () => loadTasks(true).catch(complain));
  $("#submit-workflow").addEventListener("change", (event) => showWorkflow(event.target.value).catch(complain));
  $("#submit-form").addEventListener("submit", submitWorkflow);
  $("#scale-form").addEventListener("submit", (event) => setScale(event));
  $("#scale-reset").addEventListener("click", (event) => setScale(event, true));
  $("#refresh-all").addEventListener("click", (event) => refreshAll(event.currentTarget));
  $("#models-panel").addEventListener("toggle", () => loadModels().catch(complain));
  $("#models-find").addEventListener("input", () => loadModels().catch(complain));
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog || event.target.value === "close") dialog.close();
    });
  }
  window.addEventListener("resize", () => { if (state.view === "tasks") state.samples = drawCharts(state.samples); });
}

wire();
start();
