// The tailnet graph, drawn by cytoscape. React owns the data; this
// component diffs it into one long-lived cytoscape instance, so that a
// fan-out's results recolour edges without a re-layout. Where nodes go and
// which labels show is decided by layout.ts's pure functions from sizes
// measured here; an adapter is a badge on its host, drawn by graph.ts.
import { useEffect, useRef, useState } from "react";
import cytoscape from "cytoscape";
import type { Core, EdgeSingular, ElementDefinition, NodeSingular } from "cytoscape";
import type { EdgeData, Elements, NodeData } from "./graph";
import { EDGE_LABELS, formatLatency } from "./graph";
import type { Box, LabelCandidate, LayoutNode } from "./layout";
import { GEOMETRY, SIDES, fitLabels, labelSize, layoutGraph, sideStyle } from "./layout";

// Beyond this many edges cytoscape draws straight "haystack" edges, which
// are several times cheaper than curves: 100 fully meshed hosts have 9,900.
const CHEAP_EDGES = 1500;

// Label text, as cytoscape is told to draw it and as it is measured here.
const FONT_FAMILY = "system-ui, sans-serif";
const NODE_FONT = 11;
const NODE_PAD = 2; // text-background-padding
const EDGE_FONT = 9;
const EDGE_PAD = 1;
const PADDING = 24; // canvas edge kept clear by the layout and the fit
const GAP = 4; // clear space kept between labels
const MAX_ZOOM_FIT = 1.25; // a few nodes are not blown up beyond this

// A magnifier, drawn inside the node of a host an adapter debugs.
const BADGE =
  "data:image/svg+xml;utf8," +
  encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" width="14" height="14" viewBox="0 0 14 14">' +
      '<circle cx="5.8" cy="5.8" r="3.6" fill="none" stroke="#fff" stroke-width="1.8"/>' +
      '<line x1="8.5" y1="8.5" x2="12" y2="12" stroke="#fff" stroke-width="2.2" stroke-linecap="round"/></svg>',
  );

interface Props {
  elements: Elements;
  selected: string | null;
  onSelect: (id: string | null) => void;
}

// Tip is the hover card: what a node or edge is, in full.
interface Tip {
  x: number; // where the pointer is, in the canvas
  y: number;
  // Which way the card opens: towards the canvas's centre, away from the
  // labels, which face outward.
  left: boolean;
  up: boolean;
  title: string;
  lines: string[];
}

function style(cheap: boolean): cytoscape.StylesheetJson {
  return [
    {
      selector: "node",
      style: {
        "background-color": "#3b6fd8",
        label: "data(label)",
        "font-family": FONT_FAMILY,
        "font-size": NODE_FONT,
        color: "#1d2433",
        "text-background-color": "#fff",
        "text-background-opacity": 0.85,
        "text-background-padding": `${NODE_PAD}px`,
        "text-background-shape": "roundrectangle",
        width: GEOMETRY.size,
        height: GEOMETRY.size,
        "min-zoomed-font-size": 7,
        "text-events": "no",
      },
    },
    // Each side's label placement comes from layout.ts, which computed
    // the boxes with the same margins.
    ...SIDES.map((side) => {
      const s = sideStyle(side);
      return {
        selector: `node.side-${side}`,
        style: { "text-halign": s.halign, "text-valign": s.valign, "text-margin-x": s.marginX, "text-margin-y": s.marginY },
      };
    }),
    { selector: "node.infra", style: { shape: "round-rectangle", width: 16, height: 16, "background-color": "#7a8fb8" } },
    { selector: "node.host", style: { "border-width": 3, "border-color": "#173f8a" } },
    {
      selector: "node.debugged",
      style: { "background-image": BADGE, "background-width": 14, "background-height": 14, "background-fit": "none" },
    },
    { selector: "node.offline", style: { "background-color": "#bdbdbd", "border-color": "#999", color: "#888" } },
    // A node with a failed edge, in a graph too big to draw its edges.
    { selector: "node.failing", style: { "border-width": 3, "border-color": "#d93636" } },
    { selector: "node.match", style: { "border-width": 5, "border-color": "#f5b700" } },
    { selector: "node:selected", style: { "border-width": 5, "border-color": "#111" } },
    { selector: "node.focus", style: { "border-width": 5, "border-color": "#111", "z-index": 20 } },
    {
      selector: "edge",
      style: {
        width: 1.5,
        "line-color": "data(color)",
        "target-arrow-color": "data(color)",
        "target-arrow-shape": cheap ? "none" : "triangle",
        "arrow-scale": 0.6,
        "curve-style": cheap ? "haystack" : "bezier",
        "haystack-radius": 0.4,
        // Thousands of edges are a texture: faint, so that labels and the
        // failed (opaque, red) edges stand out.
        opacity: cheap ? 0.3 : 0.75,
        // No edge label unless it fits (or its node is hovered): a label
        // on each of 10,000 edges is unreadable, and measuring them is
        // most of the cost of recolouring a big graph.
        label: "",
        "font-family": FONT_FAMILY,
        "font-size": EDGE_FONT,
        color: "#1d2433",
        "text-background-color": "#fff",
        "text-background-opacity": 0.9,
        "text-background-padding": `${EDGE_PAD}px`,
        "min-zoomed-font-size": 6,
        "text-events": "no",
      },
    },
    { selector: "edge.cat-idle", style: { "line-style": "dashed", opacity: cheap ? 0.2 : 0.45 } },
    { selector: "edge.cat-failed", style: { width: 2.5, opacity: 0.95, color: "#b3261e" } },
    { selector: "edge.show-label", style: { label: "data(label)", "z-index": 10 } },
    { selector: "edge.faded", style: { opacity: 0.08 } },
    { selector: "edge.hl", style: { width: 2.5, opacity: 1, "z-index": 10 } },
    { selector: "edge:selected", style: { width: 4, opacity: 1 } },
  ];
}

// isViewClass tells the classes GraphView adds from those graph.ts gives.
function isViewClass(k: string): boolean {
  return k.startsWith("side-") || k === "focus" || k === "hl" || k === "faded" || k === "show-label";
}

function toDefs(el: Elements): ElementDefinition[] {
  return [...el.nodes, ...el.edges] as unknown as ElementDefinition[];
}

// textWidth measures label text the way cytoscape does (a canvas with the
// same font), caching by string: labels repeat ("1.5 ms").
function textMeasurer(): (text: string, size: number) => number {
  const ctx = document.createElement("canvas").getContext("2d");
  const cache = new Map<string, number>();
  return (text, size) => {
    const k = `${size}|${text}`;
    let w = cache.get(k);
    if (w === undefined) {
      if (ctx) {
        ctx.font = `normal normal ${size}px ${FONT_FAMILY}`;
        w = ctx.measureText(text).width;
      } else {
        w = text.length * size * 0.6;
      }
      cache.set(k, w);
    }
    return w;
  };
}

// byName orders names as people do: node-2 before node-10.
const byName = new Intl.Collator(undefined, { numeric: true });

// layout places every node (layoutGraph) and fits the drawing to the
// canvas. Hosts go first, then by name, so that a host's place is stable.
function layout(c: Core, measure: ReturnType<typeof textMeasurer>) {
  const w = c.width();
  const h = c.height();
  if (w < 50 || h < 50 || c.nodes().length === 0) return;
  const ns = c
    .nodes()
    .toArray()
    .sort((a, b) => Number(b.hasClass("host")) - Number(a.hasClass("host")) || byName.compare(String(a.data("name")), String(b.data("name"))));
  const input: LayoutNode[] = ns.map((n) => ({
    id: n.id(),
    host: n.hasClass("host"),
    label: labelSize(measure(String(n.data("label")), NODE_FONT), NODE_FONT, NODE_PAD),
  }));
  const l = layoutGraph(input, { width: w, height: h, padding: PADDING, gap: GAP });
  c.batch(() => {
    for (const n of ns) {
      const p = l.pos.get(n.id());
      if (!p) continue;
      n.position({ x: p.x, y: p.y });
      for (const s of SIDES) if (s !== p.side && n.hasClass(`side-${s}`)) n.removeClass(`side-${s}`);
      n.addClass(`side-${p.side}`);
    }
  });
  c.fit(undefined, PADDING);
  if (c.zoom() > MAX_ZOOM_FIT) {
    c.zoom(MAX_ZOOM_FIT);
    c.center();
  }
}

// showEdgeLabels shows the edge labels that fit beside the nodes, their
// labels and each other: of every edge, or of the focused node's only.
// Failed calls go first, then short edges, whose labels sit nearest
// their ends.
// EdgeIndex finds an edge's latest data by ID, built only when asked: a
// big fan-out updates 10,000 edges many times a second, and most updates
// never need it.
class EdgeIndex {
  private m: Map<string, EdgeData> | null = null;
  constructor(private el: Elements) {}
  get(id: string): EdgeData | undefined {
    this.m ??= new Map(this.el.edges.map((e) => [e.data.id, e.data]));
    return this.m.get(id);
  }
}

function showEdgeLabels(c: Core, focus: NodeSingular | null, cheap: boolean, latest: EdgeIndex, measure: ReturnType<typeof textMeasurer>) {
  const edges = focus ? focus.connectedEdges() : cheap ? c.collection() : c.edges();
  const cands: LabelCandidate[] = [];
  const byID = new Map<string, EdgeSingular>();
  edges.forEach((e) => {
    const d = latest.get(e.id());
    if (!d || !d.label) return;
    // Big graphs leave label data stale (see the diff below): catch up
    // on the few edges about to show theirs.
    if (e.data("label") !== d.label) e.data("label", d.label);
    const m = e.midpoint();
    const s = e.source().position();
    const t = e.target().position();
    const rank = (d.category === "failed" ? 0 : 1e6) + Math.hypot(s.x - t.x, s.y - t.y);
    cands.push({ id: e.id(), x: m.x, y: m.y, size: labelSize(measure(d.label, EDGE_FONT), EDGE_FONT, EDGE_PAD), rank });
    byID.set(e.id(), e);
  });
  const obstacles: Box[] = [];
  c.nodes().forEach((n) => {
    obstacles.push(n.boundingBox({ includeLabels: false, includeOverlays: false }));
    const lb = n.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: true, includeOverlays: false });
    if (lb.w > 0) obstacles.push(lb);
  });
  const shown = fitLabels(cands, obstacles, GAP);
  c.batch(() => {
    c.edges(".show-label").forEach((e) => {
      if (!shown.has(e.id())) e.removeClass("show-label");
    });
    for (const id of shown) byID.get(id)?.addClass("show-label");
  });
}

function tipAt(c: Core, x: number, y: number): Pick<Tip, "x" | "y" | "left" | "up"> {
  return { x, y, left: x > c.width() / 2, up: y > c.height() / 2 };
}

function nodeTip(d: NodeData): Pick<Tip, "title" | "lines"> {
  const n = d.node;
  const lines = [
    [n.online ? "online" : "offline", n.os, n.version].filter(Boolean).join(" · "),
    n.addresses.join(", "),
    ...d.adapters.map((a) => `adapter ${a}`),
  ];
  return { title: d.name, lines: lines.filter(Boolean) };
}

function edgeTip(d: EdgeData, c: Core): Pick<Tip, "title" | "lines"> {
  const name = (id: string) => String(c.getElementById(id).data("name") ?? id);
  const r = d.result;
  const lines = [
    r ? (r.ok ? `${formatLatency(r.latencyMs)} · ${r.path ?? ""}${r.endpoint ? " " + r.endpoint : ""}` : `failed: ${r.error ?? ""}`) : EDGE_LABELS[d.category],
  ];
  if (d.edge.derpRegion) lines.push(`home DERP ${d.edge.derpRegion}`);
  return { title: `${name(d.source)} → ${name(d.target)}`, lines };
}

export function GraphView({ elements, selected, onSelect }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const cy = useRef<Core | null>(null);
  const cheap = useRef(false);
  const latest = useRef(new EdgeIndex(elements));
  // What the focus last was, and whether edge labels are shown: a big
  // graph with neither skips the work of clearing them on every update.
  const focused = useRef<string | null>(null);
  const hovered = useRef<string | null>(null);
  const selectedRef = useRef(selected);
  const measure = useRef(textMeasurer());
  const onSelectRef = useRef(onSelect);
  onSelectRef.current = onSelect;
  selectedRef.current = selected;
  const [tip, setTip] = useState<Tip | null>(null);
  // refocus re-applies the hovered (else the selected) node's focus: its
  // edges stand out with their labels, the rest fade.
  const refocus = useRef(() => {});
  const relabel = useRef(0);

  useEffect(() => {
    const c = cytoscape({
      container: box.current,
      elements: [],
      style: style(false),
      wheelSensitivity: 0.3,
      textureOnViewport: true,
      hideEdgesOnViewport: true,
      minZoom: 0.05,
      maxZoom: 4,
    });
    refocus.current = () => {
      cancelAnimationFrame(relabel.current);
      relabel.current = requestAnimationFrame(() => {
        const id = hovered.current ?? selectedRef.current;
        const n = id ? c.getElementById(id) : null;
        const focus = n && n.nonempty() && n.isNode() ? (n as NodeSingular) : null;
        if (cheap.current && !focus && focused.current === null) return;
        focused.current = focus ? focus.id() : null;
        c.batch(() => {
          c.nodes(".focus").removeClass("focus");
          c.edges(".hl").removeClass("hl");
          c.edges(".faded").removeClass("faded");
          if (focus) {
            focus.addClass("focus");
            focus.connectedEdges().addClass("hl");
            c.edges().difference(focus.connectedEdges()).addClass("faded");
          }
        });
        showEdgeLabels(c, focus, cheap.current, latest.current, measure.current);
      });
    };
    c.on("tap", "node", (ev) => onSelectRef.current(ev.target.id()));
    c.on("tap", (ev) => {
      if (ev.target === c) onSelectRef.current(null);
    });
    c.on("mouseover", "node", (ev) => {
      const n = ev.target as NodeSingular;
      hovered.current = n.id();
      const p = n.renderedPosition();
      setTip({ ...tipAt(c, p.x, p.y), ...nodeTip(n.data() as NodeData) });
      refocus.current();
    });
    c.on("mouseout", "node", () => {
      hovered.current = null;
      setTip(null);
      refocus.current();
    });
    c.on("mouseover", "edge", (ev) => {
      const e = ev.target as EdgeSingular;
      const d = latest.current.get(e.id());
      if (d) setTip({ ...tipAt(c, ev.renderedPosition.x, ev.renderedPosition.y), ...edgeTip(d, c) });
    });
    c.on("mouseout", "edge", () => setTip(null));
    // A node dragged by hand moves its edges' labels: fit them again.
    c.on("dragfree", "node", () => refocus.current());
    c.on("viewport", () => setTip(null));
    cy.current = c;
    // Tests and curious users can read the graph's state.
    (window as unknown as { __tsymbioteCy?: Core }).__tsymbioteCy = c;
    // The layout fills the canvas: lay it out again when the canvas
    // changes size (a window resize, the panels reflowing).
    let size = { w: c.width(), h: c.height() };
    let timer = 0;
    const ro = new ResizeObserver(() => {
      clearTimeout(timer);
      timer = window.setTimeout(() => {
        c.resize();
        const w = c.width();
        const h = c.height();
        if (Math.abs(w - size.w) < 8 && Math.abs(h - size.h) < 8) return;
        size = { w, h };
        layout(c, measure.current);
        refocus.current();
      }, 150);
    });
    if (box.current) ro.observe(box.current);
    return () => {
      ro.disconnect();
      clearTimeout(timer);
      cancelAnimationFrame(relabel.current);
      c.destroy();
      cy.current = null;
    };
  }, []);

  // The node and edge lists last put into cytoscape: a live graph hands
  // the same lists back while only its counts changed.
  const applied = useRef<{ nodes: unknown; edges: unknown } | null>(null);
  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    if (applied.current?.nodes === elements.nodes && applied.current.edges === elements.edges) return;
    applied.current = { nodes: elements.nodes, edges: elements.edges };
    latest.current = new EdgeIndex(elements);
    const want = toDefs(elements);
    const wantIds = new Set(want.map((d) => d.data.id as string));
    const before = new Set(c.nodes().map((n) => n.id()));
    let added = 0;
    let relabelled = false;
    // A graph that leaves edges out (live.ts) is big however few it
    // draws: fitting the labels of its failed edges on every batch of
    // results is what kept it from painting.
    const isCheap = elements.edges.length > CHEAP_EDGES || elements.hidden > 0;
    c.batch(() => {
      c.elements().forEach((e) => {
        if (!wantIds.has(e.id())) e.remove();
      });
      const fresh: ElementDefinition[] = [];
      for (const d of want) {
        const e = c.getElementById(d.data.id as string);
        if (e.nonempty()) {
          // Touch only what changed: with 10,000 edges and results
          // arriving every 50 ms, needless restyling is what makes a big
          // graph sluggish.
          const nd = d.data as { label?: string; category?: string; node?: unknown };
          if (isCheap && e.isEdge()) {
            // Labels are hidden: leave them stale (and the edge's size
            // cache valid) until one is shown, when showEdgeLabels
            // catches up.
            if (e.data("category") !== nd.category) {
              const { label: _hidden, ...rest } = d.data;
              e.data(rest);
            }
          } else if (e.data("label") !== nd.label || e.data("category") !== nd.category || (e.isNode() && e.data("node") !== nd.node)) {
            relabelled ||= e.isNode() && e.data("label") !== nd.label;
            e.data(d.data);
          }
          // Keep the classes this view adds (label side, focus, shown
          // label): React's are the rest. Most edges have none of them.
          const have = e.classes().join(" ");
          if (have !== d.classes) {
            const mine = have.split(" ").filter(isViewClass);
            const cls = [d.classes as string, ...mine].join(" ");
            if (have !== cls) e.classes(cls);
          }
        } else {
          fresh.push(d);
        }
      }
      added = fresh.filter((d) => d.group === "nodes").length;
      c.add(fresh);
      if (isCheap !== cheap.current) {
        cheap.current = isCheap;
        c.style(style(isCheap));
        focused.current = ""; // labels shown so far are redone once
      }
    });
    const nodeSetChanged = added > 0 || c.nodes().length !== before.size;
    if ((nodeSetChanged || relabelled) && c.nodes().length > 0) layout(c, measure.current);
    refocus.current();
  }, [elements]);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    c.nodes(":selected").unselect();
    if (selected) c.getElementById(selected).select();
    refocus.current();
  }, [selected, elements]);

  return (
    <div className="graph-wrap">
      <div className="graph" ref={box} data-testid="graph" data-folded-edges={elements.folded} data-hidden-edges={elements.hidden} />
      <div className="graph-key" data-testid="graph-key">
        <span><i className="key-host"><img src={BADGE} alt="" /></i> host, with its adapter</span>
        <span><i className="key-node" /> peer</span>
        <span><i className="key-infra" /> WebUI or adapter</span>
        {elements.hidden > 0 ? (
          <span className="muted" data-testid="hidden-edges">
            {elements.hidden.toLocaleString()} edges not drawn: select a node to draw its edges (a red ring: some of its pings failed)
          </span>
        ) : (
          <span className="muted">hover a node for its edges&apos; latencies</span>
        )}
      </div>
      {tip && (
        <div
          className="graph-tip"
          role="tooltip"
          style={{ left: tip.x, top: tip.y, transform: `translate(${tip.left ? "calc(-100% - 14px)" : "14px"}, ${tip.up ? "calc(-100% - 14px)" : "14px"})` }}
        >
          <b>{tip.title}</b>
          {tip.lines.map((l, i) => (
            <div key={i}>{l}</div>
          ))}
        </div>
      )}
    </div>
  );
}
