// The control plane (GET /api/cluster, admins): every comfyart replica on this Redis, the one that leads (its
// fencing epoch and since when), each one's version and heartbeat age, and a replica whose fleet configuration is not
// the leader's. One card per replica; none when the daemon runs no registry.

import { ago, h } from "./dom.js";

export function renderReplicas(cluster) {
  if (!cluster) return [];
  const lag = (record) => Math.max(0, cluster.now_ms - record.heartbeat_ms) / 1000;
  return cluster.replicas.map((r) => h("article", { class: "card replica", dataset: { replica: r.name,
                                                                                     leader: String(r.leader) } },
    h("div", { class: "head" },
      h("span", { class: "name", title: r.url }, r.name + (r.name === cluster.replica ? " (this page)" : "")),
      h("span", { class: `badge ${r.leader ? "healthy" : "idle"}`, "data-role": "role" },
        r.leader ? "leader" : "standby")),
    h("dl", { class: "facts" },
      h("dt", {}, "version"), h("dd", {}, r.version || "?"),
      h("dt", {}, "address"), h("dd", {}, r.url || "?"),
      h("dt", {}, "started"), h("dd", {}, ago(r.started_ms)),
      h("dt", {}, "heartbeat"), h("dd", {}, `${lag(r).toFixed(1)} s ago`),
      r.leader && cluster.leader
        ? [h("dt", {}, "epoch"), h("dd", {}, `${cluster.leader.epoch}, leading since ${ago(cluster.leader.since_ms)}`)]
        : null,
      r.config_differs
        ? [h("dt", {}, "configuration"), h("dd", { class: "error" }, `differs in ${r.differing_sections.join(", ")}`)]
        : null)));
}

export function leaderLine(cluster) {
  if (!cluster) return "";
  if (!cluster.leader) return "No replica leads at the moment: the fleet waits for one to take the lease.";
  const n = cluster.replicas.length;
  return `${n} replica${n === 1 ? "" : "s"}; ${cluster.leader.name} leads (epoch ${cluster.leader.epoch}).`;
}
