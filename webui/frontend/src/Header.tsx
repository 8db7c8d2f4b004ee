// The page's header: what the graph holds, a refresh, and who is looking.
import type { ReactNode } from "react";
import { useEffect, useState } from "react";
import type { Graph, Me } from "./api";
import { fetchMe } from "./api";

export function Header({ graph, loading, onRefresh, nav }: { graph: Graph | null; loading: boolean; onRefresh: () => void; nav?: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  useEffect(() => {
    // Who is looking is decoration: a failure shows nothing.
    fetchMe().then(setMe, () => {});
  }, []);
  const online = graph?.nodes.filter((n) => n.online).length ?? 0;
  return (
    <header>
      <h1>TSymbiote</h1>
      {nav}
      <span className="muted" data-testid="summary">
        {graph ? `${graph.nodes.length} nodes (${online} online), ${graph.edges.length} edges, ${graph.hosts.length} hosts via ${graph.adapters.length} adapters` : "loading…"}
      </span>
      <button onClick={onRefresh} disabled={loading}>{loading ? "Refreshing…" : "Refresh"}</button>
      <span className="spacer" />
      {me && <span className="muted">{me.dev ? "dev mode" : me.login || me.node}</span>}
    </header>
  );
}
