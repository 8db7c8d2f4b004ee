// The results of the last fan-out, failures first; long lists show the
// first 500.
import { useMemo } from "react";
import type { Result } from "./api";
import { formatLatency } from "./graph";

const SHOWN = 500;

// outcome is what a successful call found: a ping's latency, a query's answers.
function outcome(r: Result): string {
  switch (r.kind) {
    case "ping":
      return formatLatency(r.latencyMs);
    case "dns":
      return `${r.rcode} ${(r.answers ?? []).join(", ")}`;
  }
}

export function ResultsTable({ results }: { results: Result[] }) {
  const sorted = useMemo(() => [...results].sort((a, b) => Number(a.ok) - Number(b.ok) || a.seq - b.seq), [results]);
  if (results.length === 0) return <p className="muted">No results yet.</p>;
  return (
    <div className="results-wrap">
      <table className="results" data-testid="results">
        <thead>
          <tr><th>from</th><th>to</th><th>outcome</th><th>path</th><th>call</th></tr>
        </thead>
        <tbody>
          {sorted.slice(0, SHOWN).map((r) => (
            <tr key={r.seq} className={r.ok ? "" : "fail"}>
              <td>{r.hostName}</td>
              <td>{r.kind === "ping" ? r.peerName : r.dnsName}</td>
              <td>{r.ok ? outcome(r) : <span className="error">{r.error}</span>}</td>
              <td>{r.path}{r.endpoint ? ` ${r.endpoint}` : ""}{r.derpRegion ? ` ${r.derpRegion}` : ""}</td>
              <td>{r.ms.toFixed(0)} ms</td>
            </tr>
          ))}
        </tbody>
      </table>
      {sorted.length > SHOWN && <p className="muted">and {sorted.length - SHOWN} more (export for all)</p>}
    </div>
  );
}
