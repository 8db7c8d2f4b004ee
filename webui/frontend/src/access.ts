// The Access page's logic, kept out of the components so that it is tested
// without a browser: which section a request belongs in, which buttons it
// gets, and how the time left of a grant counts down.
import type { AccessOverview, AccessRequest, AccessTarget } from "./api";

export type Section = "pending" | "mine" | "active" | "history";

// Sections are what the page shows, in order: requests I may decide, my
// own open requests, every active grant, and everything that ended.
export interface Sections {
  pending: AccessRequest[];
  mine: AccessRequest[];
  active: AccessRequest[];
  history: AccessRequest[];
}

const open = (r: AccessRequest) => r.phase === "Pending" || r.phase === "Approved" || r.phase === "Active";

// sections sorts the overview's requests into the page's sections. A
// request shows once: an active grant of mine is under "active", a
// pending request I may approve under "pending".
export function sections(o: AccessOverview): Sections {
  const s: Sections = { pending: [], mine: [], active: [], history: [] };
  for (const r of o.requests) {
    if (!open(r)) s.history.push(r);
    else if (r.phase === "Active" || r.phase === "Approved") s.active.push(r);
    else if (r.canApprove) s.pending.push(r);
    else s.mine.push(r);
  }
  // Grants ending soonest first; the rest as the server sent them (newest first).
  s.active.sort((a, b) => (a.secondsLeft ?? 0) - (b.secondsLeft ?? 0));
  return s;
}

export type Action = "approve" | "deny" | "revoke";

// actions are the buttons a request gets: only what the server says the
// caller may do, and only while the request is in a phase that allows it.
export function actions(r: AccessRequest): Action[] {
  const out: Action[] = [];
  if (r.phase === "Pending" && r.canApprove) out.push("approve", "deny");
  if (open(r) && r.canRevoke) out.push("revoke");
  return out;
}

// secondsLeft is a grant's time left at clientNow, counted from the
// server's figure at the moment the page fetched it (fetchedAt, client
// clock), so that a client clock that is off does not matter.
export function secondsLeft(r: AccessRequest, fetchedAt: number, clientNow: number): number {
  if (r.phase !== "Active") return 0;
  const left = (r.secondsLeft ?? 0) - Math.floor((clientNow - fetchedAt) / 1000);
  return Math.max(0, left);
}

// formatLeft is a countdown: "59s", "4m 05s", "2h 03m", "3d 4h".
export function formatLeft(s: number): string {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${pad(m)}m`;
  if (m > 0) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

// parseDuration reads what a person types for a duration: "90s", "15m",
// "1h30m", "2h", or a bare number of minutes. It returns seconds, or null.
export function parseDuration(text: string): number | null {
  const t = text.trim().toLowerCase();
  if (/^\d+$/.test(t)) return Number(t) * 60;
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(t);
  if (!m || t === "") return null;
  const [d, h, min, s] = m.slice(1).map((x) => (x ? Number(x) : 0));
  const total = d * 86400 + h * 3600 + min * 60 + s;
  return total > 0 ? total : null;
}

// checkRequest says what is wrong with a request for target before it is
// sent (the server checks again), or null.
export function checkRequest(t: AccessTarget, seconds: number | null, reason: string): string | null {
  if (seconds === null) return "Duration: type e.g. 30m, 1h or 1h30m.";
  if (t.maxSeconds && seconds > t.maxSeconds) return `At most ${formatLeft(t.maxSeconds)} for ${t.label || t.name}.`;
  if (t.reasonRequired && reason.trim() === "") return `${t.label || t.name} requires a reason.`;
  return null;
}

// who is how the page names the caller.
export function who(o: AccessOverview): string {
  return o.me.dev ? "dev mode (no tailnet identity)" : o.me.login || o.me.node || "unknown";
}
