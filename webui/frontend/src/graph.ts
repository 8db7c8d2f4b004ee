// Pure graph building: the API's graph plus the last fan-out's results
// become cytoscape elements with classes for colour, filtered and searched.
import type { Graph, GraphEdge, GraphNode, Result } from "./api";

// Edge categories, each with its own colour.
export type EdgeCategory = "direct" | "derp" | "peer-relay" | "peerapi" | "local" | "failed" | "idle";

export const EDGE_COLORS: Record<EdgeCategory, string> = {
  direct: "#2e9d4f",
  derp: "#e08a00",
  "peer-relay": "#8a4fd1",
  peerapi: "#2f7de1",
  local: "#1b9aaa",
  failed: "#d93636",
  idle: "#b5b5b5",
};

export const EDGE_LABELS: Record<EdgeCategory, string> = {
  direct: "direct",
  derp: "DERP",
  "peer-relay": "peer relay",
  peerapi: "peerapi",
  local: "local",
  failed: "failed",
  idle: "no traffic yet",
};

export function pairKey(hostNode: string, peer: string): string {
  return `${hostNode}>${peer}`;
}

// resultIndex keys ping results by (host node, peer); a later result for
// the same pair replaces an earlier one.
export function resultIndex(results: Result[]): Map<string, Result> {
  const m = new Map<string, Result>();
  for (const r of results) {
    if (r.peer) m.set(pairKey(r.hostNode, r.peer), r);
  }
  return m;
}

// resultCategory is how a ping result colours its edge.
export function resultCategory(r: Result): EdgeCategory {
  if (!r.ok) return "failed";
  if (r.pingType === "peerapi") return "peerapi";
  switch (r.path) {
    case "direct":
    case "derp":
    case "peer-relay":
    case "local":
      return r.path;
  }
  return "idle";
}

// edgeCategory colours an edge by the last ping over it, or else by the
// path its host's status reports.
export function edgeCategory(e: GraphEdge, r?: Result): EdgeCategory {
  if (r) return resultCategory(r);
  switch (e.path) {
    case "direct":
    case "derp":
    case "peer-relay":
    case "local":
      return e.path;
  }
  return "idle";
}

export function formatLatency(ms: number | undefined): string {
  if (ms === undefined) return "";
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  return `${Math.round(ms)} ms`;
}

export interface Filters {
  hideOffline: boolean;
  tag: string; // "" = any
  os: string; // "" = any
  search: string;
}

export const NO_FILTERS: Filters = { hideOffline: false, tag: "", os: "", search: "" };

export function nodeVisible(n: GraphNode, f: Filters): boolean {
  if (f.hideOffline && !n.online) return false;
  if (f.tag === "(untagged)" && n.tags.length > 0) return false;
  if (f.tag && f.tag !== "(untagged)" && !n.tags.includes(f.tag)) return false;
  if (f.os && (n.os || "unknown") !== f.os) return false;
  return true;
}

export function nodeMatches(n: GraphNode, q: string): boolean {
  q = q.trim().toLowerCase();
  if (!q) return false;
  return (
    n.name.toLowerCase().includes(q) ||
    (n.dnsName ?? "").toLowerCase().includes(q) ||
    n.addresses.some((a) => a.includes(q)) ||
    n.tags.some((t) => t.toLowerCase().includes(q)) ||
    n.id.toLowerCase() === q
  );
}

export interface NodeData {
  id: string;
  label: string;
  node: GraphNode;
}
export interface EdgeData {
  id: string;
  source: string;
  target: string;
  label: string;
  category: EdgeCategory;
  color: string;
  edge: GraphEdge;
  result?: Result;
}
export interface Element<T> {
  group: "nodes" | "edges";
  data: T;
  classes: string;
}

export interface Elements {
  nodes: Element<NodeData>[];
  edges: Element<EdgeData>[];
  counts: Record<EdgeCategory, number>;
}

// buildElements makes the cytoscape elements for g with the results of
// the last fan-out laid over its edges, keeping only what the filters
// let through (an edge needs both of its ends visible).
export function buildElements(g: Graph, results: Result[], f: Filters): Elements {
  const idx = resultIndex(results);
  const visible = new Set<string>();
  const nodes: Element<NodeData>[] = [];
  for (const n of g.nodes) {
    if (!nodeVisible(n, f)) continue;
    visible.add(n.id);
    const cls = [n.online ? "online" : "offline"];
    if (n.hosts.length > 0) cls.push("host");
    if (n.tags.includes("tag:tsymbiote-adapter") || n.tags.includes("tag:tsymbiote-webui")) cls.push("infra");
    if (f.search && nodeMatches(n, f.search)) cls.push("match");
    nodes.push({ group: "nodes", data: { id: n.id, label: n.name || n.id, node: n }, classes: cls.join(" ") });
  }
  const counts: Record<EdgeCategory, number> = {
    direct: 0, derp: 0, "peer-relay": 0, peerapi: 0, local: 0, failed: 0, idle: 0,
  };
  const edges: Element<EdgeData>[] = [];
  for (const e of g.edges) {
    if (!visible.has(e.source) || !visible.has(e.target)) continue;
    const r = idx.get(pairKey(e.source, e.target));
    const category = edgeCategory(e, r);
    counts[category]++;
    const label = r && r.ok ? formatLatency(r.latencyMs) : r ? "failed" : "";
    edges.push({
      group: "edges",
      data: { id: e.id, source: e.source, target: e.target, label, category, color: EDGE_COLORS[category], edge: e, result: r },
      classes: `cat-${category}${r ? " pinged" : ""}`,
    });
  }
  return { nodes, edges, counts };
}

// filterOptions lists the tags and OSes the filters offer.
export function filterOptions(g: Graph): { tags: string[]; oses: string[] } {
  const tags = new Set<string>();
  const oses = new Set<string>();
  for (const n of g.nodes) {
    n.tags.forEach((t) => tags.add(t));
    oses.add(n.os || "unknown");
  }
  return { tags: [...tags].sort(), oses: [...oses].sort() };
}
