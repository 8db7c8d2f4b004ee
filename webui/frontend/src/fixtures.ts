// Test fixtures: a small graph and fan-out results, shaped like the API's.
import type { Graph, GraphEdge, GraphNode, Result } from "./api";

export function node(id: string, over: Partial<GraphNode> = {}): GraphNode {
  return { id, name: `node-${id}`, os: "linux", tags: ["tag:test"], addresses: [`100.64.0.${id}`], online: true, hosts: [`a${id}|sock`], seenBy: [], ...over };
}

export function edge(src: string, dst: string, over: Partial<GraphEdge> = {}): GraphEdge {
  return { id: `a${src}|sock->${dst}`, source: src, target: dst, host: `a${src}|sock`, path: "idle", active: false, online: true, rxBytes: 0, txBytes: 0, ...over };
}

export function graph(nodes: GraphNode[], edges: GraphEdge[]): Graph {
  return { nodes, edges, hosts: [], adapters: [], errors: [], generatedAt: "2026-11-21T00:00:00Z" };
}

let seq = 0;
export function ping(src: string, dst: string, over: Partial<Result> = {}): Result {
  seq++;
  return {
    seq, host: `a${src}|sock`, hostNode: src, hostName: `node-${src}`, adapter: `adapter-${src}`, ok: true, ms: 2,
    startedAt: "2026-11-21T00:00:00Z", peer: dst, peerName: `node-${dst}`, peerIp: `100.64.0.${dst}`, pingType: "disco",
    latencyMs: 1.5, path: "direct", ...over,
  };
}

// mesh is n fully meshed online hosts.
export function mesh(n: number): Graph {
  const nodes = Array.from({ length: n }, (_, i) => node(String(i + 1)));
  const edges: GraphEdge[] = [];
  for (const a of nodes) for (const b of nodes) if (a !== b) edges.push(edge(a.id, b.id));
  return graph(nodes, edges);
}
