// Incremental views of a big fan-out: a ping all over 250 hosts streams
// 62,250 results, and rebuilding the matrix and the graph's edges from all
// of them on every batch cost the page hundreds of milliseconds per
// update. These keep what was built and take each batch in work
// proportional to the batch. Pure: the tests drive them by hand.
import type { FanoutRequest, Graph, Result } from "./api";
import type { EdgeCategory, EdgeData, Element, Elements, Filters, NodeData } from "./graph";
import { EDGE_COLORS, buildElements, edgeCategory, formatLatency, pairKey } from "./graph";
import { FAILED_COLOR, cellKey, heatColor, heatHue } from "./matrix";

// Feed hands out the results of a growing list that were not handed out
// yet. The fan-out's results only ever grow by appending (a new array
// each time); any other change (a new fan-out) starts over.
export class Feed {
  private seen = 0;
  private last: Result | undefined;

  // next returns the results not handed out yet, at most max of them,
  // whether the list started over (then they are the first), and how
  // many are left for the next call.
  next(results: Result[], max = Infinity): { fresh: Result[]; reset: boolean; left: number } {
    const continues = results.length >= this.seen && (this.seen === 0 || results[this.seen - 1] === this.last);
    const from = continues ? this.seen : 0;
    const to = Math.min(results.length, from + max);
    this.seen = to;
    this.last = results[to - 1];
    return { fresh: results.slice(from, to), reset: !continues, left: results.length - to };
  }

  // taken is how many results were handed out.
  get taken(): number {
    return this.seen;
  }
}

// scaleBounds rounds a latency range out to quarter decades, so that the
// colour scale (and with it every cell's colour) changes a few times in
// a fan-out rather than with most batches.
export function scaleBounds(min: number, max: number): [number, number] {
  if (!(min <= max)) return [0, 0];
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(min, 0.01)) * 4) / 4);
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(max, 0.01)) * 4) / 4);
  return [lo, Math.max(hi, lo)];
}

export interface Axis {
  id: string;
  name: string;
}

// matrixAxes are the rows (hosts) and columns (peers) a ping fan-out of
// req over graph g is to fill, as LiveMatrix lays them out: the graph's
// edges are each host's peers as its status lists them, which the
// server's plan pings (online ones unless req says offline too).
export function matrixAxes(g: Graph, req: Pick<FanoutRequest, "hosts" | "peers" | "includeOffline">): { rows: Axis[]; cols: Axis[] } {
  const hosts = req.hosts?.length ? new Set(req.hosts) : null;
  const peers = req.peers?.length ? new Set(req.peers) : null;
  const nodes = new Map(g.nodes.map((n) => [n.id, n]));
  const rows = new Map<string, string>();
  const cols = new Map<string, string>();
  for (const e of g.edges) {
    if (hosts && !hosts.has(e.host)) continue;
    if (peers && !peers.has(e.target)) continue;
    const peer = nodes.get(e.target);
    if (!peer || (!peer.online && !req.includeOffline)) continue;
    rows.set(e.source, nodes.get(e.source)?.name ?? e.source);
    cols.set(e.target, peer.name || e.target);
  }
  return { rows: [...rows].map(([id, name]) => ({ id, name })), cols: [...cols].map(([id, name]) => ({ id, name })) };
}

// LiveMatrix is the latency matrix built up batch by batch. add says
// which cells to draw: only the new ones, or all when a row or column
// appeared or the colour scale moved. Axes known ahead (matrixAxes) lay
// the matrix out once: in a 250-host ping all the rows and columns
// otherwise kept appearing until the last results, and each one
// redrew every cell.
export class LiveMatrix {
  rows: Axis[] = [];
  cols: Axis[] = [];
  rowIndex = new Map<string, number>();
  colIndex = new Map<string, number>();
  cells = new Map<string, Result>();
  ok = 0;
  lo = 0;
  hi = 0;
  private min = Infinity;
  private max = -Infinity;
  private rowNames = new Map<string, string>();
  private colNames = new Map<string, string>();
  private dirty: Set<string> | "all" = "all";

  constructor(axes?: { rows: Axis[]; cols: Axis[] }) {
    if (!axes) return;
    for (const r of axes.rows) this.rowNames.set(r.id, r.name);
    for (const c of axes.cols) this.colNames.set(c.id, c.name);
    this.layout();
  }

  // take returns the cells changed since the last take (all of them
  // after a change of rows, columns or scale) for the canvas to draw.
  take(): "all" | string[] {
    const d = this.dirty;
    this.dirty = new Set();
    return d === "all" ? d : [...d];
  }

  // add takes a batch of results and returns the cells to draw for it.
  add(rs: Result[]): "all" | string[] {
    const d = this.addBatch(rs);
    if (d === "all") this.dirty = "all";
    else if (this.dirty !== "all") for (const k of d) this.dirty.add(k);
    return d;
  }

  private addBatch(rs: Result[]): "all" | string[] {
    let structural = false;
    const changed: string[] = [];
    for (const r of rs) {
      if (!r.peer) continue;
      const row = r.hostNode || r.host;
      if (!this.rowNames.has(row)) {
        this.rowNames.set(row, r.hostName);
        structural = true;
      }
      if (!this.colNames.has(r.peer)) {
        this.colNames.set(r.peer, r.peerName || r.peer);
        structural = true;
      }
      const k = cellKey(row, r.peer);
      const prev = this.cells.get(k);
      if (prev?.ok) this.ok--;
      if (r.ok) this.ok++;
      this.cells.set(k, r);
      changed.push(k);
      if (r.ok && r.latencyMs !== undefined) {
        this.min = Math.min(this.min, r.latencyMs);
        this.max = Math.max(this.max, r.latencyMs);
      }
    }
    const [lo, hi] = scaleBounds(this.min, this.max);
    if (lo !== this.lo || hi !== this.hi) {
      this.lo = lo;
      this.hi = hi;
      structural = true;
    }
    if (structural) {
      this.layout();
      return "all";
    }
    return changed;
  }

  // layout sorts the rows and the columns by name.
  private layout() {
    const byName = (a: Axis, b: Axis) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id);
    this.rows = [...this.rowNames].map(([id, name]) => ({ id, name })).sort(byName);
    this.cols = [...this.colNames].map(([id, name]) => ({ id, name })).sort(byName);
    this.rowIndex = new Map(this.rows.map((r, i) => [r.id, i]));
    this.colIndex = new Map(this.cols.map((c, i) => [c.id, i]));
  }

  // color is a cell's colour on the current scale.
  color(r: Result): string {
    return r.ok && r.latencyMs !== undefined ? heatColor(r.latencyMs, this.lo, this.hi) : FAILED_COLOR;
  }

  // pixel is color packed as rgba packs it, without building a string:
  // a full redraw of a 250-host matrix asks 62,250 times.
  pixel(r: Result): number {
    if (!(r.ok && r.latencyMs !== undefined)) return FAILED_RGBA;
    if (!(this.hi > this.lo)) return rgba(heatColor(r.latencyMs, this.lo, this.hi));
    const h = heatHue(r.latencyMs, this.lo, this.hi);
    let v = HUES[h];
    if (v === 0) v = HUES[h] = rgba(`hsl(${h}, 65%, 45%)`);
    return v;
  }

  // at is the cell at row i, column j, with its row's and column's IDs.
  at(i: number, j: number): { row: Axis; col: Axis; result?: Result } | null {
    const row = this.rows[i];
    const col = this.cols[j];
    if (!row || !col) return null;
    return { row, col, result: this.cells.get(cellKey(row.id, col.id)) };
  }
}

// edgeOf builds the element of one edge with its latest result laid over it.
function edgeOf(base: Element<EdgeData>, r: Result | undefined): Element<EdgeData> {
  const category = edgeCategory(base.data.edge, r);
  const label = r && r.ok ? formatLatency(r.latencyMs) : r ? "failed" : "";
  return {
    group: "edges",
    data: { ...base.data, label, category, color: EDGE_COLORS[category], result: r },
    classes: `cat-${category}${r ? " pinged" : ""}`,
  };
}

// LiveGraph is the graph of a tailnet too big to draw every edge: its
// nodes, a "failing" class on each node with a failed edge, and the
// focus node's edges, with the legend's counts over every edge kept up
// to date result by result. The graph and the filters are laid out once
// (buildElements); each result then moves one edge from one count to
// another. Drawing every failed edge cost cytoscape a 200-300 ms redraw
// per update (2% of 62,250 is 1,245 edges); a node's ring says as much.
export class LiveGraph {
  readonly base: Elements;
  private byPair = new Map<string, Element<EdgeData>>();
  private byNode = new Map<string, Element<EdgeData>[]>();
  private results = new Map<string, Result>();
  private failing = new Map<string, number>(); // node ID: its failed edges
  private ringed = new Set<string>(); // nodes drawn with a ring
  private version = 0; // counts changes to what is drawn
  private focus: string | null = null; // the last elements' focus
  private cache: { key: string; nodes: Element<NodeData>[]; edges: Element<EdgeData>[] } | null = null;
  counts: Record<EdgeCategory, number>;

  constructor(g: Graph, f: Filters) {
    this.base = buildElements(g, [], f);
    this.counts = { ...this.base.counts };
    for (const e of this.base.edges) {
      this.byPair.set(pairKey(e.data.source, e.data.target), e);
      for (const n of [e.data.source, e.data.target]) {
        const l = this.byNode.get(n);
        if (l) l.push(e);
        else this.byNode.set(n, [e]);
      }
    }
  }

  // reset forgets every result: a new fan-out started.
  reset() {
    this.results.clear();
    this.failing.clear();
    this.ringed.clear();
    this.counts = { ...this.base.counts };
    this.version++;
  }

  // edges is how many edges the graph has to draw, were they all drawn.
  get edges(): number {
    return this.base.edges.length;
  }

  // failed is how many of node id's edges failed.
  failed(id: string): number {
    return this.failing.get(id) ?? 0;
  }

  add(rs: Result[]) {
    for (const r of rs) {
      if (!r.peer) continue;
      const k = pairKey(r.hostNode, r.peer);
      const e = this.byPair.get(k);
      if (!e) continue;
      const before = edgeCategory(e.data.edge, this.results.get(k));
      const after = edgeCategory(e.data.edge, r);
      this.counts[before]--;
      this.counts[after]++;
      this.results.set(k, r);
      if ((before === "failed") !== (after === "failed")) {
        // A node's ring shows or goes when elements next draws it.
        for (const n of [e.data.source, e.data.target]) this.failing.set(n, this.failed(n) + (after === "failed" ? 1 : -1));
      }
      // One of the focus node's edges got a result: redraw.
      if (r.hostNode === this.focus || r.peer === this.focus) this.version++;
    }
  }

  // elements are what to draw: every node (failing ones marked) and the
  // focus node's edges; hidden counts the rest. They are built again
  // only when a node's ring or a drawn edge changed, or the focus moved,
  // so that a view can tell by identity that there is nothing to
  // redraw; tick is any value that changes with the results (a memo's
  // key), otherwise unused. At most maxRings rings show or go per call,
  // the rest wait for the next: cytoscape redraws each node whose ring
  // changed, and ringing most of 250 nodes at once cost a 120-170 ms
  // frame where 10 cost 12-26 ms.
  elements(focus: string | null, tick?: unknown, maxRings = Infinity): Elements {
    void tick;
    let flips = 0;
    for (const n of this.base.nodes) {
      if (flips >= maxRings) break;
      const id = n.data.id;
      const want = this.failed(id) > 0;
      if (want === this.ringed.has(id)) continue;
      if (want) this.ringed.add(id);
      else this.ringed.delete(id);
      flips++;
    }
    if (flips > 0) this.version++;
    this.focus = focus;
    const key = `${this.version}|${focus ?? ""}`;
    if (this.cache?.key !== key) this.cache = { key, nodes: this.nodes(), edges: this.drawn(focus) };
    const { nodes, edges } = this.cache;
    return { nodes, edges, counts: { ...this.counts }, folded: this.base.folded, hidden: this.base.edges.length - edges.length };
  }

  // ringsBehind counts the nodes whose ring elements has yet to show or
  // take away.
  get ringsBehind(): number {
    let k = 0;
    for (const n of this.base.nodes) if (this.failed(n.data.id) > 0 !== this.ringed.has(n.data.id)) k++;
    return k;
  }

  private nodes(): Element<NodeData>[] {
    return this.base.nodes.map((n) => (this.ringed.has(n.data.id) ? { ...n, classes: `${n.classes} failing` } : n));
  }

  private drawn(focus: string | null): Element<EdgeData>[] {
    return ((focus && this.byNode.get(focus)) || []).map((e) => edgeOf(e, this.results.get(pairKey(e.data.source, e.data.target))));
  }
}

// rgba is a CSS colour as the matrix draws it ("#rrggbb" or
// "hsl(h, s%, l%)") packed for a Uint32Array over ImageData bytes (R, G,
// B, A in memory: little-endian, as every browser the WebUI serves runs);
// 0 for anything else.
export function rgba(css: string): number {
  let r: number, g: number, b: number;
  const hex = /^#([0-9a-f]{6})$/i.exec(css);
  const hsl = /^hsl\(\s*([\d.]+),\s*([\d.]+)%,\s*([\d.]+)%\)$/.exec(css);
  if (hex) {
    const v = parseInt(hex[1], 16);
    [r, g, b] = [v >> 16, (v >> 8) & 255, v & 255];
  } else if (hsl) {
    const h = Number(hsl[1]) / 360;
    const s = Number(hsl[2]) / 100;
    const l = Number(hsl[3]) / 100;
    const q = l < 0.5 ? l * (1 + s) : l + s - l * s;
    const p = 2 * l - q;
    const ch = (t: number) => {
      t = (t + 1) % 1;
      const v = t < 1 / 6 ? p + (q - p) * 6 * t : t < 1 / 2 ? q : t < 2 / 3 ? p + (q - p) * (2 / 3 - t) * 6 : p;
      return Math.round(v * 255);
    };
    [r, g, b] = [ch(h + 1 / 3), ch(h), ch(h - 1 / 3)];
  } else {
    return 0;
  }
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

const FAILED_RGBA = rgba(FAILED_COLOR);
// HUES caches heat colours by hue (0 until first asked for).
const HUES = new Uint32Array(361);
