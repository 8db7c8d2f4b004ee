// The WebUI: the tailnet graph, fan-out controls with progress, the latency
// matrix, a results table and per-node details. Every failure is shown
// next to what failed; an error boundary keeps one broken panel from
// blanking the page.
import type { ReactNode } from "react";
import { useCallback, useDeferredValue, useEffect, useMemo, useState } from "react";
import type { FanoutRequest, FanoutState, Result } from "./api";
import { Boundary } from "./Boundary";
import { FanoutBar } from "./FanoutBar";
import { FilterBar } from "./FilterBar";
import { GraphProblems } from "./GraphProblems";
import { GraphView } from "./GraphView";
import { Header } from "./Header";
import { Legend } from "./Legend";
import { Progress } from "./Progress";
import type { Tab } from "./SidePanel";
import { SidePanel } from "./SidePanel";
import { isBusy } from "./fanout";
import type { Filters } from "./graph";
import { NO_FILTERS, buildElements, filterOptions } from "./graph";
import { buildMatrix } from "./matrix";
import { useFanout } from "./useFanout";
import { useGraph } from "./useGraph";
import { useLive } from "./useLive";
import { useThrottled } from "./useThrottled";

// Beyond this many calls the graph and the matrix follow the results once
// a second, so that the progress bar and the controls stay live.
const BIG_FANOUT = 2000;
// Beyond this many edges the graph draws only the selected node's edges
// and rings nodes with failed ones (live.ts); the legend and the matrix
// still count every one.
const DRAWN_EDGES = 20000;
const NO_RESULTS: Result[] = [];
// RINGS bounds the rings a live graph's redraw adds or takes away while
// results stream in (LiveGraph.elements).
const RINGS = 24;

// App is the graph page; nav links to the other pages.
export function App({ nav }: { nav?: ReactNode }) {
  const { graph, error: graphError, loading, load } = useGraph();
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const deferredFilters = useDeferredValue(filters);
  const [selected, setSelected] = useState<string | null>(null);
  const [tab, setTab] = useState<Tab>("matrix");

  // Paths settle after pings: show what the hosts see now, once the
  // page shows every result (below).
  const [reload, setReload] = useState(false);
  const onDone = useCallback((st: FanoutState) => {
    if (st.request.kind === "ping") setReload(true);
  }, []);
  const fanout = useFanout(onDone);

  const running = fanout.phase === "running";
  const pingKind = fanout.state?.request.kind === "ping";
  const bigFanout = (fanout.state?.total ?? 0) > BIG_FANOUT;
  // The live views take each batch as it comes: the matrix of a big
  // fan-out, and the graph when it has too many edges to draw them all.
  const live = useLive(graph, deferredFilters, pingKind ? fanout.results : NO_RESULTS, DRAWN_EDGES, pingKind ? fanout.state : null);
  const deferredResults = useThrottled(fanout.results, running && bigFanout ? 1000 : 0);
  // A live graph redraws at most four times a second while results
  // stream in or wait to be taken in, with at most RINGS rings more or
  // fewer each time: cytoscape repaints the whole canvas for any change
  // and redraws each node whose ring changed, and rings appear until the
  // last results (a node's first failed ping comes after its round
  // trip, up to 500 ms in the benchmark's tailnet). Redrawing on every
  // frame once the server was done cost 70-120 ms frames; ringing 200
  // nodes at once a 120-170 ms one.
  const streaming = running || live.left > 0;
  const liveGraphResults = useThrottled(live.results, streaming && live.graph ? 250 : 0);
  const elements = useMemo(() => {
    if (!graph) return null;
    if (live.graph) return live.graph.elements(selected, liveGraphResults, streaming ? RINGS : Infinity);
    return buildElements(graph, pingKind ? deferredResults : NO_RESULTS, deferredFilters);
  }, [graph, live.graph, liveGraphResults, deferredResults, pingKind, deferredFilters, selected, streaming]);
  const matrix = useMemo(() => buildMatrix(pingKind && !bigFanout ? deferredResults : NO_RESULTS), [deferredResults, pingKind, bigFanout]);
  // Benchmarks read how many results of the last fan-out are on screen:
  // effects run after the graph and the matrix drew them.
  useEffect(() => {
    const graphDrawn = live.graph ? liveGraphResults : deferredResults.length;
    const matrixDrawn = bigFanout ? live.results : deferredResults.length;
    const n = pingKind ? Math.min(graphDrawn, matrixDrawn) : fanout.results.length;
    (window as unknown as { __tsymbioteDrawn?: () => number }).__tsymbioteDrawn = () => n;
  }, [live, liveGraphResults, deferredResults, pingKind, bigFanout, fanout.results]);
  // The graph is fetched again after the last result is on screen, and
  // after a frame: a big graph's live view is rebuilt with it, which
  // took 250 ms and held up the last results when it came first.
  const drained = live.left === 0 && (!live.graph || liveGraphResults === live.results);
  useEffect(() => {
    if (!reload || !drained) return;
    let t: ReturnType<typeof setTimeout> | undefined;
    const f = requestAnimationFrame(() => {
      t = setTimeout(() => {
        setReload(false);
        load();
      }, 0);
    });
    return () => {
      cancelAnimationFrame(f);
      clearTimeout(t);
    };
  }, [reload, drained, load]);
  const options = useMemo(() => (graph ? filterOptions(graph) : { tags: [], oses: [] }), [graph]);
  const selectedNode = graph?.nodes.find((n) => n.id === selected) ?? null;

  const select = (id: string | null) => {
    setSelected(id);
    if (id) setTab("details");
  };
  const selectFirstMatch = () => {
    const m = elements?.nodes.find((n) => n.classes.includes("match"));
    if (m) select(m.data.id);
  };
  const start = async (req: FanoutRequest) => {
    if (await fanout.start(req)) setTab(req.kind === "ping" ? "matrix" : "results");
  };

  return (
    <div className="app">
      <Header graph={graph} loading={loading} onRefresh={() => load(true)} nav={nav} />
      <GraphProblems graph={graph} error={graphError} />
      <FilterBar filters={filters} onChange={setFilters} options={options} onSearchEnter={selectFirstMatch} />
      <FanoutBar
        busy={isBusy(fanout)}
        canPing={graph !== null}
        canCancel={running && !fanout.canceling}
        selectedHosts={selectedNode ? selectedNode.hosts : null}
        state={fanout.state}
        results={fanout.results}
        onStart={start}
        onCancel={fanout.cancel}
        onError={fanout.fail}
      />
      <Progress state={fanout.state} error={fanout.error} />
      <main>
        <div className="left">
          <Boundary name="graph">
            {elements ? (
              <GraphView elements={elements} selected={selected} onSelect={select} />
            ) : (
              <div className="graph muted">{graphError ? "No graph." : "Loading the graph…"}</div>
            )}
          </Boundary>
          {elements && <Legend counts={elements.counts} />}
        </div>
        <SidePanel tab={tab} onTab={setTab} matrix={matrix} live={bigFanout ? live : null} results={fanout.results} selected={selectedNode} onClose={() => setSelected(null)} />
      </main>
    </div>
  );
}
