// The right-hand panel: the latency matrix, the results table or the
// selected node's details, one tab at a time.
import type { GraphNode, Result } from "./api";
import { Boundary } from "./Boundary";
import { Details } from "./Details";
import type { Live } from "./useLive";
import { LiveCanvasMatrix, MatrixView } from "./Matrix";
import type { Matrix } from "./matrix";
import { ResultsTable } from "./ResultsTable";

export type Tab = "matrix" | "results" | "details";

interface Props {
  tab: Tab;
  onTab: (t: Tab) => void;
  matrix: Matrix;
  // live, for a big fan-out, is drawn instead of matrix.
  live: Live | null;
  results: Result[];
  selected: GraphNode | null;
  onClose: () => void;
}

export function SidePanel({ tab, onTab, matrix, live, results, selected, onClose }: Props) {
  return (
    <div className="right">
      <div className="tabs" role="tablist">
        <button role="tab" className={tab === "matrix" ? "active" : ""} onClick={() => onTab("matrix")}>Matrix</button>
        <button role="tab" className={tab === "results" ? "active" : ""} onClick={() => onTab("results")}>Results ({results.length})</button>
        <button role="tab" className={tab === "details" ? "active" : ""} onClick={() => onTab("details")}>Details</button>
      </div>
      <Boundary name={tab}>
        {tab === "matrix" && (live ? <LiveCanvasMatrix live={live.matrix} version={live.results} /> : <MatrixView m={matrix} />)}
        {tab === "results" && <ResultsTable results={results} />}
        {tab === "details" &&
          (selected ? <Details node={selected} results={results} onClose={onClose} /> : <p className="muted">Click a node for its details.</p>)}
      </Boundary>
    </div>
  );
}
