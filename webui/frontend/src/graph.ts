// Pure graph building: the API's graph plus the last fan-out's results
// become cytoscape elements with classes for colour, filtered and searched.
import type { Graph, GraphEdge, GraphNode, Result } from "./api";
import { shortLabel } from "./layout";

// The tags of TSymbiote's own nodes (contract.TagAdapter, contract.TagWebUI).
export const TAG_ADAPTER = "tag:tsymbiote-adapter";
export const TAG_WEBUI = "tag:tsymbiote-webui";

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
  label: string; // the name, shortened
  name: string;
  node: GraphNode;
  adapters: string[]; // names of the adapters that debug this node, drawn as a badge on it
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
  // folded counts the edges to and from adapters drawn on their hosts:
  // they are in the graph (and pinged) but not drawn.
  folded: number;
  // hidden counts the edges of a graph too big to draw them all that are
  // left out (see live.ts's LiveGraph); the counts include them.
  hidden: number;
}

// hostIDSep joins an adapter's ID and its target into a host ID (as the
// Go side's hostID does).
const hostIDSep = "|";

// adapterNodes finds the tailnet node of each adapter that debugs a
// host, and maps it to the nodes of the hosts it debugs. An adapter is a
// tailnet node of its own beside the tailscaled it attaches to; it is
// found by its ID (the control plane's device ID) or else by the address
// it was reached at. Adapters reached outside the tailnet (--adapter
// host:port) have no node and are left out.
export function adapterNodes(g: Graph): Map<string, string[]> {
  const byID = new Map(g.nodes.map((n) => [n.id, n]));
  const byAddr = new Map<string, string>();
  for (const n of g.nodes) for (const a of n.addresses) byAddr.set(a, n.id);
  const adapterNode = new Map<string, string>();
  for (const a of g.adapters) {
    if (byID.has(a.id)) {
      adapterNode.set(a.id, a.id);
      continue;
    }
    const ip = hostOf(a.addr);
    const id = ip ? byAddr.get(ip) : undefined;
    if (id) adapterNode.set(a.id, id);
  }
  const out = new Map<string, string[]>();
  for (const h of g.hosts) {
    const adapterID = h.id.slice(0, h.id.lastIndexOf(hostIDSep));
    const an = adapterNode.get(adapterID);
    if (!an || !h.nodeId || an === h.nodeId || !byID.has(h.nodeId)) continue;
    const hs = out.get(an) ?? [];
    if (!hs.includes(h.nodeId)) hs.push(h.nodeId);
    out.set(an, hs);
  }
  // A node that is itself a host stays a node of its own.
  for (const an of [...out.keys()]) if ((byID.get(an)?.hosts.length ?? 0) > 0) out.delete(an);
  return out;
}

// hostOf is the IP of "ip:port" or "[ip6]:port".
function hostOf(addr: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(addr) ?? /^([^:]*):\d+$/.exec(addr);
  return m ? m[1] : "";
}

// buildElements makes the cytoscape elements for g with the results of
// the last fan-out laid over its edges, keeping only what the filters
// let through (an edge needs both of its ends visible).
export function buildElements(g: Graph, results: Result[], f: Filters): Elements {
  const idx = resultIndex(results);
  const shown = g.nodes.filter((n) => nodeVisible(n, f));
  const visible = new Set(shown.map((n) => n.id));
  // An adapter is drawn on the hosts it debugs, as a badge, not as a node
  // beside them; with none of its hosts in view it is a node again.
  const onHost = new Map<string, GraphNode[]>();
  const folded = new Set<string>();
  const byID = new Map(g.nodes.map((n) => [n.id, n]));
  for (const [an, hosts] of adapterNodes(g)) {
    const a = byID.get(an)!;
    const hs = hosts.filter((h) => visible.has(h));
    if (hs.length === 0) continue;
    folded.add(an);
    for (const h of hs) onHost.set(h, [...(onHost.get(h) ?? []), a]);
  }
  // Every host carries the badge and names its adapters, also those
  // reached outside the tailnet, which have no node to fold.
  const adapterNames = new Map<string, string[]>();
  for (const h of g.hosts) if (h.nodeId) adapterNames.set(h.nodeId, [...(adapterNames.get(h.nodeId) ?? []), h.adapter]);
  const nodes: Element<NodeData>[] = [];
  for (const n of shown) {
    if (folded.has(n.id)) continue;
    const adapters = onHost.get(n.id) ?? [];
    const names = new Set(adapters.map((a) => a.name || a.id));
    for (const a of adapterNames.get(n.id) ?? n.hosts.map((h) => h.slice(0, h.lastIndexOf(hostIDSep)))) names.add(a);
    const cls = [n.online ? "online" : "offline"];
    if (n.hosts.length > 0) cls.push("host");
    if (names.size > 0) cls.push("debugged");
    if (n.tags.includes(TAG_ADAPTER) || n.tags.includes(TAG_WEBUI)) cls.push("infra");
    if (f.search && [n, ...adapters].some((m) => nodeMatches(m, f.search))) cls.push("match");
    const name = n.name || n.id;
    nodes.push({
      group: "nodes",
      data: { id: n.id, label: shortLabel(name), name, node: n, adapters: [...names] },
      classes: cls.join(" "),
    });
  }
  const counts: Record<EdgeCategory, number> = {
    direct: 0, derp: 0, "peer-relay": 0, peerapi: 0, local: 0, failed: 0, idle: 0,
  };
  const edges: Element<EdgeData>[] = [];
  let foldedEdges = 0;
  for (const e of g.edges) {
    if (!visible.has(e.source) || !visible.has(e.target)) continue;
    if (folded.has(e.source) || folded.has(e.target)) {
      foldedEdges++;
      continue;
    }
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
  return { nodes, edges, counts, folded: foldedEdges, hidden: 0 };
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
