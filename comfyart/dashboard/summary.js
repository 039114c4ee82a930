// What a task is about, in a line, and what a workflow's parameters default to. Pure: no page, no requests.

// shown as the task's prompt, so left out of its parameters; the negative prompt says little in a list
const PROMPT_PARAMS = ["prompt", "positive", "positive_prompt", "text"];
const QUIET_PARAMS = new Set([...PROMPT_PARAMS, "negative", "negative_prompt", "filename_prefix"]);
const SEED_PARAM = "seed"; // omitted, it gets a random seed (the record keeps the one used)

export function promptText(task) {
  if (task.prompt_text) return task.prompt_text;
  for (const name of PROMPT_PARAMS) {
    const value = task.params && task.params[name];
    if (typeof value === "string" && value.trim()) return value.trim();
  }
  return "";
}

// "256×512 · steps 25 · seed 123": the parameters a run was given, in the workflow's order, each short
export function paramsSummary(params) {
  if (!params) return "";
  const parts = [];
  const size = typeof params.width === "number" && typeof params.height === "number";
  for (const [name, value] of Object.entries(params)) {
    if (QUIET_PARAMS.has(name) || value === null || value === undefined) continue;
    if (size && (name === "width" || name === "height")) {
      if (name === "width") parts.push(`${params.width}×${params.height}`);
      continue;
    }
    parts.push(`${name} ${shortValue(value)}`);
  }
  // a seed is long and tells little: last
  const seed = parts.findIndex((part) => part.startsWith(`${SEED_PARAM} `));
  if (seed >= 0) parts.push(...parts.splice(seed, 1));
  return parts.join(" · ");
}

function shortValue(value) {
  if (typeof value === "boolean") return value ? "on" : "off";
  if (typeof value === "number") return String(Math.round(value * 1000) / 1000);
  if (typeof value === "object") return value.filename || (value.input ? "upload" : "…");
  const text = String(value);
  return text.length > 24 ? `${text.slice(0, 23)}…` : text;
}

export function isLink(value) {
  return Array.isArray(value) && value.length === 2 && typeof value[1] === "number";
}

// What a parameter left empty runs with: the map's default, else (a seed) a random one, else the graph's own value
// at its first target; null when there is none to show (a link, an image).
export function paramDefault(name, spec, graph) {
  if (spec.default !== null && spec.default !== undefined) return spec.default;
  if (name === SEED_PARAM && spec.type === "int") return "random";
  const target = (spec.target || [])[0];
  const node = target && graph && graph[target.node];
  const value = node && node.inputs ? node.inputs[target.input] : undefined;
  return value === undefined || value === null || isLink(value) || typeof value === "object" ? null : value;
}

// The workflow a form opens on: the first that needs no file, so that Run works with a prompt alone
export function firstRunnable(workflows) {
  const needsFile = (w) => Object.values(w.params || {}).some((p) => p.type === "image" && p.required);
  return workflows.find((w) => !needsFile(w)) || workflows[0] || null;
}

// Does a task match what was typed in the search box? Its id, workflow, prompt, parameters, backend or error.
export function matchesText(task, text) {
  if (!text) return true;
  const fields = [task.id, task.workflow, promptText(task), paramsSummary(task.params), task.backend, task.error];
  return fields.some((v) => v && String(v).toLowerCase().includes(text));
}

// The header's counts after one task event, before the next count comes: a new task waits, a started one runs, an
// ended one leaves either. `previous` is null for a new task.
export function shiftCounts(counts, previous, status) {
  if (!counts || previous === status) return counts;
  const bucket = (s) => (s === "pending" ? "waiting" : s === "running" ? "running" : null);
  const next = { ...counts };
  const from = previous === null ? null : bucket(previous), to = bucket(status);
  if (from) next[from] = Math.max(0, next[from] - 1);
  if (to) next[to] += 1;
  return next;
}
