// Export of fan-out results: JSON (one object per call) and CSV (one row
// per call, RFC 4180 quoting).
import type { FanoutState, Result } from "./api";

export const CSV_COLUMNS: (keyof Result)[] = [
  "seq", "hostName", "hostNode", "host", "adapter", "peerName", "peer", "peerIp", "pingType",
  "ok", "latencyMs", "path", "endpoint", "derpRegion", "peerRelay", "sent", "received",
  "dnsName", "rcode", "answers", "error", "code", "ms", "startedAt",
];

export function csvField(v: unknown): string {
  if (v === undefined || v === null) return "";
  const s = Array.isArray(v) ? v.join("; ") : String(v);
  return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCSV(results: Result[]): string {
  const lines = [CSV_COLUMNS.join(",")];
  for (const r of results) lines.push(CSV_COLUMNS.map((c) => csvField(r[c])).join(","));
  return lines.join("\r\n") + "\r\n";
}

export interface ExportDoc {
  fanout: Omit<FanoutState, "results"> | null;
  exportedAt: string;
  results: Result[];
}

export function toJSON(state: FanoutState | null, results: Result[], now = new Date()): string {
  const fanout = state ? { ...state, results: undefined } : null;
  const doc: ExportDoc = { fanout, exportedAt: now.toISOString(), results };
  return JSON.stringify(doc, null, 2);
}

export function exportName(state: FanoutState | null, ext: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[:.]/g, "-");
  return `tsymbiote-${state?.request.kind ?? "results"}-${stamp}.${ext}`;
}

// download hands the browser a file.
export function download(name: string, type: string, body: string): void {
  const url = URL.createObjectURL(new Blob([body], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
