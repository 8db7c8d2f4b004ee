// Why the graph failed to load, or what went wrong while building it.
import type { Graph } from "./api";

export function GraphProblems({ graph, error }: { graph: Graph | null; error: string | null }) {
  return (
    <>
      {error && <div className="error banner" role="alert">Loading the graph failed: {error}</div>}
      {graph && graph.errors.length > 0 && (
        <details className="warn banner" data-testid="graph-errors">
          <summary>{graph.errors.length} problem(s) while building the graph</summary>
          <ul>{graph.errors.map((e, i) => <li key={i}>{e}</li>)}</ul>
        </details>
      )}
    </>
  );
}
