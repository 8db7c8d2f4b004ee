// Details of one node: what the graph knows, and for hosts (nodes an
// adapter answers for) their status, prefs, DNS, netcheck and live logs.
import { useEffect, useRef, useState } from "react";
import type { DetailKind, GraphNode, Result } from "./api";
import { fetchDetails } from "./api";
import { netcheckWho } from "./netcheck";

// What the tabs show: each a DetailKind, and the live logs.
type Kind = DetailKind | "logs";

const KINDS: readonly (readonly [Kind, string])[] = [
  ["status", "Status"],
  ["prefs", "Prefs"],
  ["dns", "DNS config"],
  ["netcheck", "Netcheck"],
  ["serve", "Serve"],
  ["derpmap", "DERP map"],
  ["logs", "Logs"],
];

function Fetched({ host, what }: { host: string; what: DetailKind }) {
  const [state, setState] = useState<{ loading: boolean; data?: unknown; error?: string }>({ loading: true });
  useEffect(() => {
    let live = true;
    setState({ loading: true });
    fetchDetails(host, what).then(
      (data) => live && setState({ loading: false, data }),
      (e: Error) => live && setState({ loading: false, error: e.message }),
    );
    return () => {
      live = false;
    };
  }, [host, what]);
  if (state.loading) return <p className="muted">Loading {what}…{what === "netcheck" ? " (takes a few seconds)" : ""}</p>;
  if (state.error) return <p className="error" role="alert">{state.error}</p>;
  const who = what === "netcheck" ? netcheckWho(state.data) : null;
  return (
    <>
      {who && <p className="muted" data-testid="netcheck-who">{who}</p>}
      <pre className="json">{JSON.stringify(state.data, null, 2)}</pre>
    </>
  );
}

function Logs({ host }: { host: string }) {
  const [lines, setLines] = useState<string[]>([]);
  const [end, setEnd] = useState<string | null>(null);
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    setLines([]);
    setEnd(null);
    const es = new EventSource(`/api/logs?host=${encodeURIComponent(host)}`);
    es.addEventListener("line", (ev) => {
      const { line } = JSON.parse((ev as MessageEvent).data);
      setLines((ls) => (ls.length > 2000 ? [...ls.slice(-1500), line] : [...ls, line]));
    });
    es.addEventListener("end", (ev) => {
      setEnd(JSON.parse((ev as MessageEvent).data).error ?? "stream ended");
      es.close();
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setEnd("could not open the log stream");
    };
    return () => es.close();
  }, [host]);
  useEffect(() => {
    box.current?.scrollTo(0, box.current.scrollHeight);
  }, [lines]);
  return (
    <>
      {end && <p className="error" role="alert">Logs: {end}</p>}
      <pre className="logs" ref={box} data-testid="logs">
        {lines.length === 0 ? "waiting for log lines…" : lines.join("\n")}
      </pre>
    </>
  );
}

export function Details({ node, results, onClose }: { node: GraphNode; results: Result[]; onClose: () => void }) {
  const [kind, setKind] = useState<Kind>("status");
  const [host, setHost] = useState<string>(node.hosts[0] ?? "");
  useEffect(() => {
    setHost(node.hosts[0] ?? "");
  }, [node.id, node.hosts]);
  const mine = results.filter((r) => r.hostNode === node.id || r.peer === node.id);
  const failed = mine.filter((r) => !r.ok);
  return (
    <div className="details" data-testid="details">
      <div className="details-head">
        <h2>{node.name}</h2>
        <button onClick={onClose} aria-label="close details">×</button>
      </div>
      <table className="kv">
        <tbody>
          <tr><th>ID</th><td>{node.id}</td></tr>
          <tr><th>DNS name</th><td>{node.dnsName}</td></tr>
          <tr><th>Addresses</th><td>{node.addresses.join(", ")}</td></tr>
          <tr><th>Online</th><td>{node.online ? "yes" : "no"}</td></tr>
          <tr><th>OS / version</th><td>{node.os || "?"} {node.version}</td></tr>
          <tr><th>Tags</th><td>{node.tags.join(", ") || "none"}</td></tr>
          {node.user && <tr><th>User</th><td>{node.user}</td></tr>}
          <tr><th>Seen by</th><td>{node.seenBy.length} host(s)</td></tr>
        </tbody>
      </table>
      {mine.length > 0 && (
        <p>
          Last fan-out: {mine.length} calls involving this node, {failed.length} failed.
          {failed.slice(0, 5).map((r) => (
            <span key={r.seq} className="error block">
              {r.hostName} → {r.peerName ?? r.dnsName}: {r.error}
            </span>
          ))}
        </p>
      )}
      {node.hosts.length === 0 ? (
        <p className="muted">No adapter answers for this node, so only what its peers and the control plane say is known.</p>
      ) : (
        <>
          {node.hosts.length > 1 && (
            <select value={host} onChange={(e) => setHost(e.target.value)} aria-label="adapter">
              {node.hosts.map((h) => <option key={h} value={h}>{h}</option>)}
            </select>
          )}
          <div className="tabs" role="tablist">
            {KINDS.map(([k, label]) => (
              <button key={k} role="tab" aria-selected={kind === k} className={kind === k ? "active" : ""} onClick={() => setKind(k)}>
                {label}
              </button>
            ))}
          </div>
          {kind === "logs" ? <Logs host={host} /> : <Fetched host={host} what={kind} />}
        </>
      )}
    </div>
  );
}
