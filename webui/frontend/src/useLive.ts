import { useMemo, useRef } from "react";
import type { Graph, Result } from "./api";
import type { Filters } from "./graph";
import { Feed, LiveGraph, LiveMatrix } from "./live";

// Live is the incremental view of the last ping fan-out (live.ts).
export interface Live {
  // graph is set when the graph has more than maxEdges edges to draw.
  graph: LiveGraph | null;
  matrix: LiveMatrix;
  // results counts the results taken in; it changes with every batch.
  results: number;
}

// useLive feeds each new batch of results to the live matrix, and to a
// live graph when the graph is too big to draw every edge. Both keep
// what they built, so a batch costs work in proportion to its size.
export function useLive(graph: Graph | null, filters: Filters, results: Result[], maxEdges: number): Live {
  const st = useRef({ feed: new Feed(), matrix: new LiveMatrix(), graph: null as LiveGraph | null });
  const lg = useMemo(() => {
    if (!graph) return null;
    const l = new LiveGraph(graph, filters);
    return l.edges > maxEdges ? l : null;
  }, [graph, filters, maxEdges]);
  return useMemo(() => {
    const s = st.current;
    const { fresh, reset } = s.feed.next(results);
    if (reset) s.matrix = new LiveMatrix();
    s.matrix.add(fresh);
    if (lg !== s.graph) {
      s.graph = lg;
      lg?.add(results);
    } else if (reset) {
      lg?.reset();
      lg?.add(results);
    } else {
      lg?.add(fresh);
    }
    return { graph: lg, matrix: s.matrix, results: results.length };
  }, [results, lg]);
}
