// Types of the WebUI's browser API (see the Go package webui) and thin
// fetch helpers. Every helper throws an Error carrying the server's own
// message, so that the UI can show it where the call was made.

export interface GraphNode {
  id: string;
  name: string;
  dnsName?: string;
  os?: string;
  version?: string;
  user?: string;
  tags: string[];
  addresses: string[];
  online: boolean;
  hosts: string[];
  seenBy: string[];
  lastSeen?: string;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  host: string;
  path: string; // direct, derp, peer-relay, idle
  currentAddress?: string;
  peerRelay?: string;
  derpRegion?: string;
  active: boolean;
  online: boolean;
  rxBytes: number;
  txBytes: number;
  lastHandshake?: string;
}

export interface GraphHost {
  id: string;
  nodeId?: string;
  name: string;
  adapter: string;
  target: string;
  version?: string;
  state?: string;
  error?: string;
}

export interface AdapterState {
  id: string;
  name: string;
  addr: string;
  online: boolean;
  error?: string;
  targets: number;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
  hosts: GraphHost[];
  adapters: AdapterState[];
  errors: string[];
  generatedAt: string;
}

export type PingType = "disco" | "tsmp" | "icmp" | "peerapi";

export interface FanoutRequest {
  kind: "ping" | "dns";
  hosts?: string[];
  peers?: string[];
  pingType?: PingType;
  count?: number;
  includeOffline?: boolean;
  dnsName?: string;
  dnsType?: string;
  timeoutMs?: number;
  concurrency?: number;
  perHost?: number;
}

export interface Result {
  seq: number;
  host: string;
  hostNode: string;
  hostName: string;
  adapter: string;
  ok: boolean;
  error?: string;
  code?: string;
  ms: number;
  startedAt: string;
  peer?: string;
  peerName?: string;
  peerIp?: string;
  pingType?: string;
  latencyMs?: number;
  path?: string;
  endpoint?: string;
  derpRegion?: string;
  peerRelay?: string;
  sent?: number;
  received?: number;
  dnsName?: string;
  rcode?: string;
  answers?: string[];
}

export interface FanoutState {
  id: string;
  request: FanoutRequest;
  total: number;
  completed: number;
  failed: number;
  done: boolean;
  canceled: boolean;
  started: string;
  elapsedMs: number;
  results?: Result[];
}

async function errorOf(res: Response): Promise<Error> {
  let msg = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") msg = body.error;
  } catch {
    // Not JSON: keep the status line.
  }
  return new Error(msg);
}

export async function fetchGraph(refresh = false): Promise<Graph> {
  const res = await fetch(refresh ? "/api/graph?refresh=1" : "/api/graph");
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function startFanout(req: FanoutRequest): Promise<FanoutState> {
  const res = await fetch("/api/fanouts", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(req),
  });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function cancelFanout(id: string): Promise<void> {
  const res = await fetch(`/api/fanouts/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  if (!res.ok) throw await errorOf(res);
}

export async function fetchDetails(host: string, what: string): Promise<unknown> {
  const res = await fetch(`/api/details?host=${encodeURIComponent(host)}&what=${encodeURIComponent(what)}`);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export interface Me {
  login?: string;
  display?: string;
  node?: string;
  dev?: boolean;
  allowed: boolean;
}

export async function fetchMe(): Promise<Me> {
  const res = await fetch("/api/me");
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// followFanout streams a fan-out's results. Results that arrive close
// together are handed over in batches, so that a 10,000-call fan-out does
// not re-render the page 10,000 times.
export function followFanout(
  id: string,
  total: number,
  on: {
    results: (rs: Result[]) => void;
    done: (st: FanoutState) => void;
    error: (msg: string) => void;
  },
): () => void {
  const es = new EventSource(`/api/fanouts/${encodeURIComponent(id)}/events`);
  let batch: Result[] = [];
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    timer = null;
    if (batch.length > 0) {
      const b = batch;
      batch = [];
      on.results(b);
    }
  };
  // A reconnecting EventSource gets the stream again from the first
  // result: skip what was already handed over.
  let lastSeq = 0;
  es.addEventListener("result", (ev) => {
    const r: Result = JSON.parse((ev as MessageEvent).data);
    if (r.seq <= lastSeq) return;
    lastSeq = r.seq;
    batch.push(r);
    // Big fan-outs update less often: re-colouring 10,000 edges costs
    // more than a quarter-second delay.
    if (timer === null) timer = setTimeout(flush, total > 2000 ? 300 : 50);
  });
  es.addEventListener("done", (ev) => {
    if (timer !== null) clearTimeout(timer);
    flush();
    es.close();
    on.done(JSON.parse((ev as MessageEvent).data));
  });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) on.error("lost the fan-out's event stream");
  };
  return () => {
    if (timer !== null) clearTimeout(timer);
    es.close();
  };
}
