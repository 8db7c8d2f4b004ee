// The WebUI's browser API: its types, generated from the Go package webui
// (api.gen.ts, by make generate), and thin fetch helpers. Every helper
// throws an Error carrying the server's own message, so that the UI can
// show it where the call was made.
import type { AccessAction, AccessOverview, AccessRequest, AccessRequestCreate, Caller, DetailKind, FanoutRequest, FanoutState, Graph, Result } from "./api.gen";

import type { SSEEvent } from "./sse";
import { sseParser } from "./sse";

export * from "./api.gen";

// Me is who the server says the browser's user is.
export type Me = Caller;

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

// CSRF_HEADER is what the WebUI requires on every state-changing request
// (webui.CSRFHeader): a page on another origin cannot send it.
export const CSRF_HEADER = "X-Tsymbiote-Csrf";

// send makes a state-changing request the way the WebUI accepts it: with
// the CSRF header (the browser adds Origin and Sec-Fetch-Site itself).
export function send(url: string, method: "POST" | "DELETE", body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { [CSRF_HEADER]: "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

export async function fetchGraph(refresh = false): Promise<Graph> {
  const res = await fetch(refresh ? "/api/graph?refresh=1" : "/api/graph");
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function startFanout(req: FanoutRequest): Promise<FanoutState> {
  const res = await send("/api/fanouts", "POST", req);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function cancelFanout(id: string): Promise<void> {
  const res = await send(`/api/fanouts/${encodeURIComponent(id)}/cancel`, "POST");
  if (!res.ok) throw await errorOf(res);
}

export async function fetchDetails(host: string, what: DetailKind): Promise<unknown> {
  const res = await fetch(`/api/details?host=${encodeURIComponent(host)}&what=${encodeURIComponent(what)}`);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function fetchMe(): Promise<Me> {
  const res = await fetch("/api/me");
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// followFanout streams a fan-out's results. Results that arrive close
// together are handed over in batches, at most one per animation frame,
// so that a 10,000-call fan-out does not re-render the page 10,000
// times. (Every 300 ms for big fan-outs held the last results of a
// 250-host ping all back by up to a third of a second: what follows
// them is incremental, or throttled on its own.) The events are read
// through fetch and parsed here (sse.ts), not by EventSource; a stream
// that breaks is read again, as EventSource would, up to RETRIES times.
export function followFanout(
  id: string,
  on: {
    results: (rs: Result[]) => void;
    done: (st: FanoutState) => void;
    error: (msg: string) => void;
  },
): () => void {
  // Batched events: one JSON array per write of the server, not one
  // event (and one parse) per result.
  const url = `/api/fanouts/${encodeURIComponent(id)}/events?batch=1`;
  const stop = new AbortController();
  let batch: Result[] = [];
  let frame: number | null = null;
  let finished = false;
  const flush = () => {
    frame = null;
    if (batch.length > 0) {
      const b = batch;
      batch = [];
      on.results(b);
    }
  };
  // A stream read again starts from the first result: skip what was
  // already handed over.
  let lastSeq = 0;
  const handle = (ev: SSEEvent) => {
    if (ev.type === "results") {
      const rs: Result[] = JSON.parse(ev.data);
      for (const r of rs) {
        if (r.seq <= lastSeq) continue;
        lastSeq = r.seq;
        batch.push(r);
      }
      if (frame === null && batch.length > 0) frame = requestAnimationFrame(flush);
    } else if (ev.type === "done") {
      finished = true;
      if (frame !== null) cancelAnimationFrame(frame);
      flush();
      stop.abort();
      on.done(JSON.parse(ev.data));
    }
  };
  (async () => {
    let why = "";
    for (let attempt = 0; attempt <= RETRIES; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 1000 * attempt));
      if (stop.signal.aborted) return;
      try {
        const res = await fetch(url, { signal: stop.signal, headers: { Accept: "text/event-stream" } });
        // A fan-out the server does not know will not come back.
        if (!res.ok) return on.error(`the fan-out's event stream: ${(await errorOf(res)).message}`);
        if (!res.body) throw new Error("no body");
        const parse = sseParser();
        const text = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await text.read();
          if (done) break;
          for (const ev of parse(value)) {
            handle(ev);
            if (finished) return;
          }
        }
        why = "the server ended it early";
      } catch (e) {
        if (stop.signal.aborted) return;
        why = (e as Error).message;
      }
    }
    on.error(`lost the fan-out's event stream: ${why}`);
  })();
  return () => {
    if (frame !== null) cancelAnimationFrame(frame);
    stop.abort();
  };
}

// RETRIES is how many times a broken event stream is read again.
const RETRIES = 3;

export async function fetchAccess(): Promise<AccessOverview> {
  const res = await fetch("/api/access");
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function requestAccess(req: AccessRequestCreate): Promise<AccessRequest> {
  const res = await send("/api/access/requests", "POST", req);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export async function accessAction(name: string, action: "approve" | "deny" | "revoke", body: AccessAction = {}): Promise<AccessRequest> {
  const res = await send(`/api/access/requests/${encodeURIComponent(name)}/${action}`, "POST", body);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}
