// Test fixture: a tailnet shaped like make demo's, with each host's
// adapter a tailnet node of its own, as the API reports it.
import type { Graph, GraphEdge, GraphNode } from "./api";
import { TAG_ADAPTER, TAG_WEBUI } from "./graph";

// tailnet has daemons tailscaled hosts (demo-node-N), pods CNI pod hosts
// (demo-default-pod-N), an adapter node for each of them, plain peers
// without an adapter (laptop-N), and the WebUI; every host sees every
// other node. tailnet(4, 2, 0) is the demo: 13 nodes.
export function tailnet(daemons: number, pods: number, plain: number): Graph {
  const nodes: GraphNode[] = [];
  const hosts: Graph["hosts"] = [];
  const adapters: Graph["adapters"] = [];
  let ip = 0;
  const add = (id: string, name: string, tags: string[]): GraphNode => {
    ip++;
    const n: GraphNode = { id, name, os: "linux", tags, addresses: [`100.64.${ip >> 8}.${ip & 255}`], online: true, hosts: [], seenBy: [] };
    nodes.push(n);
    return n;
  };
  const host = (name: string, tags: string[]) => {
    const n = add(`n-${name}`, name, tags);
    const short = name.replace(/^demo-default-/, "");
    const a = add(`a-${name}`, `tsymbiote-adapter-${short}`, [TAG_ADAPTER]);
    n.hosts.push(`${a.id}|sock`);
    hosts.push({ id: `${a.id}|sock`, nodeId: n.id, name, adapter: a.name, target: "sock" });
    adapters.push({ id: a.id, name: a.name, addr: `${a.addresses[0]}:3621`, online: true, targets: 1 });
  };
  for (let i = 1; i <= daemons; i++) host(`demo-node-${i}`, []);
  for (let i = 1; i <= pods; i++) host(`demo-default-pod-${i}`, ["tag:k8s-pod"]);
  for (let i = 1; i <= plain; i++) add(`p-${i}`, `laptop-${i}`, []);
  add("w", "tsymbiote-webui-demo", [TAG_WEBUI]);
  const edges: GraphEdge[] = [];
  for (const h of hosts) {
    for (const n of nodes) {
      if (n.id === h.nodeId) continue;
      edges.push({ id: `${h.id}->${n.id}`, source: h.nodeId!, target: n.id, host: h.id, path: "direct", active: true, online: true, rxBytes: 1, txBytes: 1 });
      n.seenBy.push(h.id);
    }
  }
  return { nodes, edges, hosts, adapters, errors: [], generatedAt: "2026-11-21T00:00:00Z" };
}
