// The latency matrix of a ping fan-out: one row per host that pinged, one
// column per peer, like Goldpinger's heatmap.
import type { Result } from "./api";

export interface Cell {
  result: Result;
  color: string;
  text: string;
}

export interface Matrix {
  rows: { id: string; name: string }[]; // hosts (node IDs)
  cols: { id: string; name: string }[]; // peers (node IDs)
  cells: Map<string, Cell>; // key row>col
  min: number;
  max: number;
}

export function cellKey(row: string, col: string): string {
  return `${row}>${col}`;
}

// heatColor maps a latency within [min, max] to green..yellow..orange on a
// logarithmic scale: loopback-fast and internet-slow both stay readable.
export function heatColor(ms: number, min: number, max: number): string {
  if (!(max > min)) return "hsl(120, 60%, 45%)";
  return `hsl(${heatHue(ms, min, max)}, 65%, 45%)`;
}

// heatHue is heatColor's hue, an integer from 120 (green) to 35 (orange):
// red is kept for failures.
export function heatHue(ms: number, min: number, max: number): number {
  const lo = Math.log(Math.max(min, 0.01));
  const hi = Math.log(Math.max(max, 0.02));
  const t = Math.min(1, Math.max(0, (Math.log(Math.max(ms, 0.01)) - lo) / (hi - lo)));
  return Math.round(120 - 85 * t);
}

export const FAILED_COLOR = "#d93636";

export function buildMatrix(results: Result[]): Matrix {
  const rows = new Map<string, string>();
  const cols = new Map<string, string>();
  const last = new Map<string, Result>();
  let min = Infinity;
  let max = -Infinity;
  for (const r of results) {
    if (!r.peer) continue;
    rows.set(r.hostNode || r.host, r.hostName);
    cols.set(r.peer, r.peerName || r.peer);
    last.set(cellKey(r.hostNode || r.host, r.peer), r);
  }
  for (const r of last.values()) {
    if (r.ok && r.latencyMs !== undefined) {
      min = Math.min(min, r.latencyMs);
      max = Math.max(max, r.latencyMs);
    }
  }
  if (min === Infinity) {
    min = 0;
    max = 0;
  }
  const cells = new Map<string, Cell>();
  for (const [k, r] of last) {
    if (r.ok && r.latencyMs !== undefined) {
      cells.set(k, { result: r, color: heatColor(r.latencyMs, min, max), text: r.latencyMs.toFixed(r.latencyMs < 10 ? 1 : 0) });
    } else {
      cells.set(k, { result: r, color: FAILED_COLOR, text: "✕" });
    }
  }
  const byName = (a: { id: string; name: string }, b: { id: string; name: string }) =>
    a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
  return {
    rows: [...rows].map(([id, name]) => ({ id, name })).sort(byName),
    cols: [...cols].map(([id, name]) => ({ id, name })).sort(byName),
    cells,
    min,
    max,
  };
}
