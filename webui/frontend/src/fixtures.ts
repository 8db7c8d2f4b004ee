// Test fixtures: a small graph and fan-out results, shaped like the API's.
// Overrides may set any path string: the frontend must survive a path a
// newer server reports that this build does not know.
import type { DNSResult, FanoutRequest, FanoutState, Graph, GraphEdge, GraphNode, PingResult } from "./api";

type AnyPath<T> = Omit<Partial<T>, "path"> & { path?: string };

export function node(id: string, over: Partial<GraphNode> = {}): GraphNode {
  return { id, name: `node-${id}`, os: "linux", tags: ["tag:test"], addresses: [`100.64.0.${id}`], online: true, hosts: [`a${id}|sock`], seenBy: [], ...over };
}

export function edge(src: string, dst: string, over: AnyPath<GraphEdge> = {}): GraphEdge {
  return { id: `a${src}|sock->${dst}`, source: src, target: dst, host: `a${src}|sock`, path: "idle", active: false, online: true, rxBytes: 0, txBytes: 0, ...over } as GraphEdge;
}

export function graph(nodes: GraphNode[], edges: GraphEdge[]): Graph {
  return { nodes, edges, hosts: [], adapters: [], errors: [], generatedAt: "2026-11-21T00:00:00Z" };
}

let seq = 0;
export function ping(src: string, dst: string, over: AnyPath<PingResult> = {}): PingResult {
  seq++;
  return {
    kind: "ping", seq, host: `a${src}|sock`, hostNode: src, hostName: `node-${src}`, adapter: `adapter-${src}`, ok: true, ms: 2,
    startedAt: "2026-11-21T00:00:00Z", peer: dst, peerName: `node-${dst}`, peerIp: `100.64.0.${dst}`, pingType: "disco",
    latencyMs: 1.5, path: "direct", ...over,
  } as PingResult;
}

export function dns(src: string, name: string, over: Partial<DNSResult> = {}): DNSResult {
  seq++;
  return {
    kind: "dns", seq, host: `a${src}|sock`, hostNode: src, hostName: `node-${src}`, adapter: `adapter-${src}`, ok: true, ms: 3,
    startedAt: "2026-11-21T00:00:00Z", dnsName: name, rcode: "NOERROR", answers: ["A 100.64.0.1"], ...over,
  };
}

// fanoutState is the server's view of a fan-out just accepted.
export function fanoutState(id: string, total: number, request: FanoutRequest = { kind: "ping" }, over: Partial<FanoutState> = {}): FanoutState {
  return {
    id, request, total, completed: 0, failed: 0, done: false, canceled: false, started: "2026-11-21T00:00:00Z", elapsedMs: 0, ...over,
  };
}

// mesh is n fully meshed online hosts.
export function mesh(n: number): Graph {
  const nodes = Array.from({ length: n }, (_, i) => node(String(i + 1)));
  const edges: GraphEdge[] = [];
  for (const a of nodes) for (const b of nodes) if (a !== b) edges.push(edge(a.id, b.id));
  return graph(nodes, edges);
}
