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
  // left counts the results not taken in yet (a render takes what it can in BUDGET_MS).
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
  // A render takes results in chunks of CHUNK for up to BUDGET_MS; the
  // rest wait for the next frame, which tick asks for, so that a burst
  // (results pile up while the page is busy) never holds one frame for
  // long, and a fast machine drains it in few frames. (1,000 a frame
  // left the last 12,000 results of a 250-host ping all, arriving
  // within 140 ms, on screen 200 ms later.)
  const [tick, setTick] = useState(0);
  const live = useMemo(() => {
    void tick;
    const t0 = performance.now();
    const s = st.current;
    let { fresh, reset, left } = s.feed.next(results, CHUNK);
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
    while (left > 0 && performance.now() - t0 < BUDGET_MS) {
      ({ fresh, left } = s.feed.next(results, CHUNK));
      s.matrix.add(fresh);
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

// A render takes in results CHUNK at a time for up to BUDGET_MS: about
// 5 µs each with throttling off, so 1,000 to 2,000 a frame.
const CHUNK = 500;
const BUDGET_MS = 6;
