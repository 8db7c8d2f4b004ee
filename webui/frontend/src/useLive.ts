import { useEffect, useMemo, useRef, useState } from "react";
import type { FanoutRequest, Graph, Result } from "./api";
import type { Filters } from "./graph";
import { Feed, LiveGraph, LiveMatrix, matrixAxes } from "./live";

// Live is the incremental view of the last ping fan-out (live.ts).
export interface Live {
  // graph is set when the graph has more than maxEdges edges to draw.
  graph: LiveGraph | null;
  matrix: LiveMatrix;
  // results counts the results taken in; it changes with every batch.
  results: number;
  // left counts the results not taken in yet (a render takes PER_FRAME).
  left: number;
}

// useLive feeds each new batch of results to the live matrix, and to a
// live graph when the graph is too big to draw every edge. Both keep
// what they built, so a batch costs work in proportion to its size.
// fanout is the fan-out results belong to: its matrix is laid out from
// the graph when it starts.
export function useLive(graph: Graph | null, filters: Filters, results: Result[], maxEdges: number, fanout?: { id: string; request: FanoutRequest } | null): Live {
  const st = useRef({ feed: new Feed(), matrix: new LiveMatrix(), graph: null as LiveGraph | null, id: "" });
  const lg = useMemo(() => {
    if (!graph) return null;
    const l = new LiveGraph(graph, filters);
    return l.edges > maxEdges ? l : null;
  }, [graph, filters, maxEdges]);
  // A render takes at most PER_FRAME results; the rest wait for the
  // next frame, which tick asks for, so that a burst (results pile up
  // while the page is busy) never holds one frame for long.
  const [tick, setTick] = useState(0);
  const live = useMemo(() => {
    void tick;
    const s = st.current;
    const { fresh, reset, left } = s.feed.next(results, PER_FRAME);
    const id = fanout?.id ?? "";
    if (reset || id !== s.id) {
      s.id = id;
      s.matrix = new LiveMatrix(graph && fanout ? matrixAxes(graph, fanout.request) : undefined);
      s.matrix.add(results.slice(0, s.feed.taken));
    } else {
      s.matrix.add(fresh);
    }
    if (lg !== s.graph || reset) {
      // A new graph (or fan-out) takes everything taken so far, once.
      s.graph = lg;
      lg?.reset();
      lg?.add(results.slice(0, s.feed.taken));
    } else {
      lg?.add(fresh);
    }
    return { graph: lg, matrix: s.matrix, results: s.feed.taken, left };
    // graph and fanout are read only when a fan-out starts.
  }, [results, lg, tick]);
  useEffect(() => {
    if (live.left === 0) return;
    const f = requestAnimationFrame(() => setTick((t) => t + 1));
    return () => cancelAnimationFrame(f);
  }, [live]);
  return live;
}

// PER_FRAME bounds the results one render takes in.
const PER_FRAME = 1000;
