// The fan-out controls: ping all or query DNS from every host (or only the
// selected node's), cancel, and export the results.
import { useState } from "react";
import type { DNSType, FanoutRequest, FanoutState, PingType, Result } from "./api";
import { DNSTypeValues, PingTypeValues } from "./api";
import { download, exportName, toCSV, toJSON } from "./export";

// A ping type the Go side adds fails to typecheck here until it has a label.
const PING_LABELS: Record<PingType, string> = { disco: "disco", tsmp: "TSMP", icmp: "ICMP", peerapi: "peerapi" };

interface Props {
  // busy: a fan-out is starting or running, so no new one.
  busy: boolean;
  canPing: boolean;
  canCancel: boolean;
  // selectedHosts are the selected node's hosts; null when none is selected.
  selectedHosts: string[] | null;
  state: FanoutState | null;
  results: Result[];
  onStart: (req: FanoutRequest) => void;
  onCancel: () => void;
  onError: (message: string) => void;
}

export function FanoutBar({ busy, canPing, canCancel, selectedHosts, state, results, onStart, onCancel, onError }: Props) {
  const [pingType, setPingType] = useState<PingType>("disco");
  const [fromSelected, setFromSelected] = useState(false);
  const [timeoutMs, setTimeoutMs] = useState(5000);
  const [dnsName, setDnsName] = useState("");
  const [dnsType, setDnsType] = useState<DNSType>("A");

  const run = (kind: FanoutRequest["kind"]) => {
    if (fromSelected && (!selectedHosts || selectedHosts.length === 0)) {
      onError("the selected node has no adapter: select a host (a node with a thick border)");
      return;
    }
    const hosts = fromSelected && selectedHosts ? selectedHosts : undefined;
    onStart(kind === "ping" ? { kind, hosts, pingType, timeoutMs } : { kind, hosts, dnsName, dnsType, timeoutMs });
  };

  return (
    <section className="toolbar">
      <select value={pingType} onChange={(e) => setPingType(e.target.value as PingType)} aria-label="ping type">
        {PingTypeValues.map((t) => <option key={t} value={t}>{PING_LABELS[t]}</option>)}
      </select>
      <button className="primary" onClick={() => run("ping")} disabled={busy || !canPing} data-testid="ping-all">
        Ping all
      </button>
      <label title="Only from the selected node's adapter(s)">
        <input type="checkbox" checked={fromSelected} onChange={(e) => setFromSelected(e.target.checked)} /> from selected only
      </label>
      <label>
        deadline <input type="number" min={100} max={60000} step={100} value={timeoutMs} onChange={(e) => setTimeoutMs(Number(e.target.value))} aria-label="deadline ms" /> ms
      </label>
      <span className="sep" />
      <input placeholder="DNS name" value={dnsName} onChange={(e) => setDnsName(e.target.value)} aria-label="DNS name" />
      <select value={dnsType} onChange={(e) => setDnsType(e.target.value as DNSType)} aria-label="DNS type">
        {DNSTypeValues.map((t) => <option key={t}>{t}</option>)}
      </select>
      <button onClick={() => run("dns")} disabled={busy || !dnsName}>Query DNS</button>
      <span className="sep" />
      <button onClick={onCancel} disabled={!canCancel} data-testid="cancel">Cancel</button>
      <button onClick={() => download(exportName(state, "json"), "application/json", toJSON(state, results))} disabled={results.length === 0} data-testid="export-json">
        Export JSON
      </button>
      <button onClick={() => download(exportName(state, "csv"), "text/csv", toCSV(results))} disabled={results.length === 0} data-testid="export-csv">
        Export CSV
      </button>
    </section>
  );
}
