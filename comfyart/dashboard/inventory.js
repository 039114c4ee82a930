// What the backends hold, as the pool view shows it: a backend's inventory summary (its counts, what no backend of
// another inventory has, a button that reads it again), and the fleet's models, each with the backends that hold
// it (GET /api/models). What acts comes in as an argument; this module asks nothing of the daemon itself.

import { clock, h } from "./dom.js";

function names(shown, more, plural) {
  return [...shown, ...(more ? [`${more} more ${plural}`] : [])];
}

// the lines under a backend's facts: counts, then "only here: …", then the refresh button
export function renderInventory(summary, refresh) {
  const button = h("button", { class: "quiet small", "data-action": "refresh", title: "read its nodes and models again",
                               onclick: (event) => refresh(event.currentTarget) }, "Refresh inventory");
  if (!summary || !summary.read) {
    return h("div", { class: "inventory", "data-role": "inventory" },
      h("div", { class: "muted" }, "inventory: not read yet"),
      summary && summary.error ? h("div", { class: "error" }, summary.error) : null, button);
  }
  if (!summary.listed) {
    return h("div", { class: "inventory", "data-role": "inventory" },
      h("div", { class: "muted" }, "inventory: lists nothing (it checks each prompt itself)"), button);
  }
  const only = summary.only_here;
  const alone = [...names(only.models, only.more_models, "models"), ...names(only.nodes, only.more_nodes, "node classes")];
  const counts = `${summary.nodes} node classes · ${summary.models} models · ${summary.embeddings} embeddings`;
  return h("div", { class: "inventory", "data-role": "inventory", dataset: { digest: summary.digest } },
    h("div", { title: `read ${clock(summary.read_ms)}; inventory ${summary.digest}` }, counts,
      summary.shared_with ? h("span", { class: "muted" }, ` · same as ${summary.shared_with} other${summary.shared_with > 1 ? "s" : ""}`) : null),
    alone.length ? h("div", { class: "only", "data-role": "only-here" },
      h("span", { class: "muted" }, "only here: "), alone.join(", ")) : null,
    summary.error ? h("div", { class: "error" }, `last read failed: ${summary.error}`) : null,
    button);
}

// the models panel: a row a model file, its kinds, and its backends (a badge each, coloured by state)
export function renderModels(listing) {
  if (!listing.models.length) return [h("p", { class: "muted" }, "No models listed.")];
  const rows = listing.models.map((model) => h("tr", { dataset: { model: model.name } },
    h("td", { class: "mono" }, model.name),
    h("td", { class: "muted" }, model.kinds.join(", ")),
    h("td", {}, ...(model.backends || []).map((b) => h("span", {
      class: `badge ${b.status === "healthy" ? (b.mode === "active" ? "healthy" : b.mode) : b.status}`,
      "data-backend": b.id, title: `${b.status}, ${b.mode}` }, b.id)))));
  const notes = [];
  if (listing.unread && listing.unread.length) notes.push(`not read yet: ${listing.unread.join(", ")}`);
  if (listing.unlisted && listing.unlisted.length) notes.push(`list nothing (may hold any): ${listing.unlisted.join(", ")}`);
  return [h("table", { class: "models-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "kind"), h("th", {}, "backends"))),
    h("tbody", {}, ...rows)),
  ...notes.map((note) => h("p", { class: "muted" }, note))];
}
