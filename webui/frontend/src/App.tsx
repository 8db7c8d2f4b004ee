// The WebUI: the tailnet graph, fan-out controls with progress, the latency
// matrix, a results table and per-node details. Every failure is shown
// next to what failed; an error boundary keeps one broken panel from
// blanking the page.
import { Component, useCallback, useDeferredValue, useEffect, useMemo, useRef, useState } from "react";
import type { ReactNode } from "react";
import type { FanoutState, Graph, Me, PingType, Result } from "./api";
import { cancelFanout, fetchGraph, fetchMe, followFanout, startFanout } from "./api";
import { GraphView } from "./GraphView";
import { MatrixView } from "./Matrix";
import { Details } from "./Details";
import type { EdgeCategory, Filters } from "./graph";
import { EDGE_COLORS, EDGE_LABELS, NO_FILTERS, buildElements, filterOptions, formatLatency } from "./graph";
import { buildMatrix } from "./matrix";
import { download, exportName, toCSV, toJSON } from "./export";

class Boundary extends Component<{ name: string; children: ReactNode }, { error: Error | null }> {
  state = { error: null as Error | null };
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  render() {
    if (this.state.error) {
      return (
        <div className="error" role="alert">
          The {this.props.name} failed to render: {this.state.error.message}{" "}
          <button onClick={() => this.setState({ error: null })}>retry</button>
        </div>
      );
    }
    return this.props.children;
  }
}

type Tab = "matrix" | "results" | "details";

// useThrottled follows value at most once per ms milliseconds (at once
// when ms is 0): re-drawing 10,000 edges and matrix cells for every batch
// of a big fan-out would freeze the page.
function useThrottled<T>(value: T, ms: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    if (ms === 0) {
      setShown(value);
      return;
    }
    const wait = Math.max(0, last.current + ms - Date.now());
    const t = setTimeout(() => {
      last.current = Date.now();
      setShown(value);
    }, wait);
    return () => clearTimeout(t);
  }, [value, ms]);
  return ms === 0 ? value : shown;
}

export function App() {
  const [graph, setGraph] = useState<Graph | null>(null);
  const [graphError, setGraphError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [me, setMe] = useState<Me | null>(null);
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const deferredFilters = useDeferredValue(filters);
  const [selected, setSelected] = useState<string | null>(null);
  const [tab, setTab] = useState<Tab>("matrix");

  const [fanout, setFanout] = useState<FanoutState | null>(null);
  const [results, setResults] = useState<Result[]>([]);
  const [fanoutError, setFanoutError] = useState<string | null>(null);
  const [pingType, setPingType] = useState<PingType>("disco");
  const [fromSelected, setFromSelected] = useState(false);
  const [timeoutMs, setTimeoutMs] = useState(5000);
  const [dnsName, setDnsName] = useState("");
  const [dnsType, setDnsType] = useState("A");
  const stopStream = useRef<(() => void) | null>(null);

  const load = useCallback(async (refresh = false) => {
    setLoading(true);
    try {
      setGraph(await fetchGraph(refresh));
      setGraphError(null);
    } catch (e) {
      setGraphError((e as Error).message);
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    load();
    fetchMe().then(setMe, () => {});
    return () => stopStream.current?.();
  }, [load]);

  const running = fanout !== null && !fanout.done;
  // The graph and the matrix follow the results at React's pace, so that
  // the progress bar and the controls stay live during a big fan-out.
  const deferredResults = useThrottled(results, running && (fanout?.total ?? 0) > 2000 ? 1000 : 0);
  const pingKind = fanout?.request.kind === "ping";
  const elements = useMemo(
    () => (graph ? buildElements(graph, pingKind ? deferredResults : [], deferredFilters) : null),
    [graph, deferredResults, pingKind, deferredFilters],
  );
  const matrix = useMemo(() => buildMatrix(pingKind ? deferredResults : []), [deferredResults, pingKind]);
  const options = useMemo(() => (graph ? filterOptions(graph) : { tags: [], oses: [] }), [graph]);
  const selectedNode = graph?.nodes.find((n) => n.id === selected) ?? null;

  const run = async (kind: "ping" | "dns") => {
    setFanoutError(null);
    stopStream.current?.();
    const hosts = fromSelected && selectedNode ? selectedNode.hosts : undefined;
    if (fromSelected && (!selectedNode || selectedNode.hosts.length === 0)) {
      setFanoutError("the selected node has no adapter: select a host (a node with a thick border)");
      return;
    }
    try {
      const st = await startFanout(
        kind === "ping" ? { kind, hosts, pingType, timeoutMs } : { kind, hosts, dnsName, dnsType, timeoutMs },
      );
      setResults([]);
      setFanout(st);
      setTab(kind === "ping" ? "matrix" : "results");
      stopStream.current = followFanout(st.id, st.total, {
        results: (rs) => {
          setResults((prev) => prev.concat(rs));
          setFanout((f) => (f && f.id === st.id ? { ...f, completed: f.completed + rs.length, failed: f.failed + rs.filter((r) => !r.ok).length } : f));
        },
        done: (final) => {
          setFanout(final);
          // Paths settle after pings: show what the hosts see now.
          if (kind === "ping") load();
        },
        error: (msg) => setFanoutError(msg),
      });
    } catch (e) {
      setFanoutError((e as Error).message);
    }
  };

  const cancel = async () => {
    if (!fanout) return;
    try {
      await cancelFanout(fanout.id);
    } catch (e) {
      setFanoutError((e as Error).message);
    }
  };

  const pct = fanout && fanout.total > 0 ? Math.floor((100 * fanout.completed) / fanout.total) : fanout?.done ? 100 : 0;
  const online = graph?.nodes.filter((n) => n.online).length ?? 0;

  return (
    <div className="app">
      <header>
        <h1>TSymbiote</h1>
        <span className="muted" data-testid="summary">
          {graph ? `${graph.nodes.length} nodes (${online} online), ${graph.edges.length} edges, ${graph.hosts.length} hosts via ${graph.adapters.length} adapters` : "loading…"}
        </span>
        <button onClick={() => load(true)} disabled={loading}>{loading ? "Refreshing…" : "Refresh"}</button>
        <span className="spacer" />
        {me && <span className="muted">{me.dev ? "dev mode" : me.login || me.node}</span>}
      </header>

      {graphError && <div className="error banner" role="alert">Loading the graph failed: {graphError}</div>}
      {graph && graph.errors.length > 0 && (
        <details className="warn banner" data-testid="graph-errors">
          <summary>{graph.errors.length} problem(s) while building the graph</summary>
          <ul>{graph.errors.map((e, i) => <li key={i}>{e}</li>)}</ul>
        </details>
      )}

      <section className="toolbar">
        <input
          type="search"
          placeholder="Search name, IP, tag"
          value={filters.search}
          onChange={(e) => setFilters({ ...filters, search: e.target.value })}
          onKeyDown={(e) => {
            if (e.key === "Enter" && elements) {
              const m = elements.nodes.find((n) => n.classes.includes("match"));
              if (m) {
                setSelected(m.data.id);
                setTab("details");
              }
            }
          }}
          aria-label="search"
        />
        <label><input type="checkbox" checked={filters.hideOffline} onChange={(e) => setFilters({ ...filters, hideOffline: e.target.checked })} /> hide offline</label>
        <select value={filters.tag} onChange={(e) => setFilters({ ...filters, tag: e.target.value })} aria-label="tag filter">
          <option value="">any tag</option>
          <option value="(untagged)">untagged</option>
          {options.tags.map((t) => <option key={t}>{t}</option>)}
        </select>
        <select value={filters.os} onChange={(e) => setFilters({ ...filters, os: e.target.value })} aria-label="OS filter">
          <option value="">any OS</option>
          {options.oses.map((o) => <option key={o}>{o}</option>)}
        </select>
      </section>

      <section className="toolbar">
        <select value={pingType} onChange={(e) => setPingType(e.target.value as PingType)} aria-label="ping type">
          <option value="disco">disco</option>
          <option value="tsmp">TSMP</option>
          <option value="icmp">ICMP</option>
          <option value="peerapi">peerapi</option>
        </select>
        <button className="primary" onClick={() => run("ping")} disabled={running || !graph} data-testid="ping-all">
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
        <select value={dnsType} onChange={(e) => setDnsType(e.target.value)} aria-label="DNS type">
          {["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"].map((t) => <option key={t}>{t}</option>)}
        </select>
        <button onClick={() => run("dns")} disabled={running || !dnsName}>Query DNS</button>
        <span className="sep" />
        <button onClick={cancel} disabled={!running} data-testid="cancel">Cancel</button>
        <button onClick={() => download(exportName(fanout, "json"), "application/json", toJSON(fanout, results))} disabled={results.length === 0} data-testid="export-json">
          Export JSON
        </button>
        <button onClick={() => download(exportName(fanout, "csv"), "text/csv", toCSV(results))} disabled={results.length === 0} data-testid="export-csv">
          Export CSV
        </button>
      </section>

      {(fanout || fanoutError) && (
        <section className="progress-row">
          {fanout && (
            <>
              <div className="progress" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct} data-testid="progress">
                <div className="bar" style={{ width: `${pct}%` }} />
              </div>
              <span data-testid="progress-text">
                {fanout.completed}/{fanout.total} ({pct}%) · {fanout.failed} failed
                {fanout.done ? ` · ${fanout.canceled ? "canceled" : "done"} in ${(fanout.elapsedMs / 1000).toFixed(2)} s` : " · running"}
              </span>
            </>
          )}
          {fanoutError && <span className="error" role="alert" data-testid="fanout-error">{fanoutError}</span>}
        </section>
      )}

      <main>
        <div className="left">
          <Boundary name="graph">
            {elements ? (
              <GraphView elements={elements} selected={selected} onSelect={(id) => { setSelected(id); if (id) setTab("details"); }} />
            ) : (
              <div className="graph muted">{graphError ? "No graph." : "Loading the graph…"}</div>
            )}
          </Boundary>
          {elements && (
            <div className="legend" data-testid="legend">
              {(Object.keys(EDGE_COLORS) as EdgeCategory[]).map((c) => (
                <span key={c} data-category={c}>
                  <i style={{ background: EDGE_COLORS[c] }} /> {EDGE_LABELS[c]} <b data-testid={`count-${c}`}>{elements.counts[c]}</b>
                </span>
              ))}
              <span><i className="dot offline" /> offline</span>
            </div>
          )}
        </div>
        <div className="right">
          <div className="tabs" role="tablist">
            <button role="tab" className={tab === "matrix" ? "active" : ""} onClick={() => setTab("matrix")}>Matrix</button>
            <button role="tab" className={tab === "results" ? "active" : ""} onClick={() => setTab("results")}>Results ({results.length})</button>
            <button role="tab" className={tab === "details" ? "active" : ""} onClick={() => setTab("details")}>Details</button>
          </div>
          <Boundary name={tab}>
            {tab === "matrix" && <MatrixView m={matrix} />}
            {tab === "results" && <ResultsTable results={results} />}
            {tab === "details" &&
              (selectedNode ? (
                <Details node={selectedNode} results={results} onClose={() => setSelected(null)} />
              ) : (
                <p className="muted">Click a node for its details.</p>
              ))}
          </Boundary>
        </div>
      </main>
    </div>
  );
}

// ResultsTable lists calls, failures first; long lists show the first 500.
function ResultsTable({ results }: { results: Result[] }) {
  const sorted = useMemo(() => [...results].sort((a, b) => Number(a.ok) - Number(b.ok) || a.seq - b.seq), [results]);
  if (results.length === 0) return <p className="muted">No results yet.</p>;
  return (
    <div className="results-wrap">
      <table className="results" data-testid="results">
        <thead>
          <tr><th>from</th><th>to</th><th>outcome</th><th>path</th><th>call</th></tr>
        </thead>
        <tbody>
          {sorted.slice(0, 500).map((r) => (
            <tr key={r.seq} className={r.ok ? "" : "fail"}>
              <td>{r.hostName}</td>
              <td>{r.peerName ?? r.dnsName}</td>
              <td>{r.ok ? (r.peer ? formatLatency(r.latencyMs) : `${r.rcode} ${(r.answers ?? []).join(", ")}`) : <span className="error">{r.error}</span>}</td>
              <td>{r.path}{r.endpoint ? ` ${r.endpoint}` : ""}{r.derpRegion ? ` ${r.derpRegion}` : ""}</td>
              <td>{r.ms.toFixed(0)} ms</td>
            </tr>
          ))}
        </tbody>
      </table>
      {sorted.length > 500 && <p className="muted">and {sorted.length - 500} more (export for all)</p>}
    </div>
  );
}
