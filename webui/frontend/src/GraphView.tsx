// The tailnet graph, drawn by cytoscape. React owns the data; this
// component diffs it into one long-lived cytoscape instance, so that a
// fan-out's results recolour edges without a re-layout.
import { useEffect, useRef } from "react";
import cytoscape from "cytoscape";
import type { Core, ElementDefinition } from "cytoscape";
import type { Elements } from "./graph";

// Beyond this many edges cytoscape draws straight "haystack" edges, which
// are several times cheaper than curves: 100 fully meshed hosts have 9,900.
const CHEAP_EDGES = 1500;

interface Props {
  elements: Elements;
  selected: string | null;
  onSelect: (id: string | null) => void;
}

function style(cheap: boolean): cytoscape.StylesheetJson {
  return [
    {
      selector: "node",
      style: {
        "background-color": "#3b6fd8",
        label: "data(label)",
        "font-size": 11,
        color: "#222",
        "text-valign": "bottom",
        "text-margin-y": 3,
        width: 22,
        height: 22,
        "min-zoomed-font-size": 7,
      },
    },
    { selector: "node.infra", style: { shape: "round-rectangle", width: 14, height: 14, "background-color": "#7a8fb8" } },
    { selector: "node.host", style: { "border-width": 3, "border-color": "#173f8a" } },
    { selector: "node.offline", style: { "background-color": "#bdbdbd", "border-color": "#999", color: "#888" } },
    { selector: "node.match", style: { "border-width": 5, "border-color": "#f5b700" } },
    { selector: "node:selected", style: { "border-width": 5, "border-color": "#111" } },
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
        opacity: 0.75,
        // A label on each of 10,000 edges is unreadable, and measuring
        // them is most of the cost of recolouring a big graph.
        label: cheap ? "" : "data(label)",
        "font-size": 8,
        color: "#333",
        "text-background-color": "#fff",
        "text-background-opacity": 0.8,
        "text-background-padding": "1px",
        "min-zoomed-font-size": 8,
      },
    },
    { selector: "edge.cat-idle", style: { "line-style": "dashed", opacity: 0.45 } },
    { selector: "edge.cat-failed", style: { width: 2.5, opacity: 0.95 } },
    { selector: "edge:selected", style: { width: 4, opacity: 1 } },
  ];
}

function toDefs(el: Elements): ElementDefinition[] {
  return [...el.nodes, ...el.edges] as unknown as ElementDefinition[];
}

export function GraphView({ elements, selected, onSelect }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const cy = useRef<Core | null>(null);
  const cheap = useRef(false);
  const onSelectRef = useRef(onSelect);
  onSelectRef.current = onSelect;

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
    c.on("tap", "node", (ev) => onSelectRef.current(ev.target.id()));
    c.on("tap", (ev) => {
      if (ev.target === c) onSelectRef.current(null);
    });
    cy.current = c;
    // Tests and curious users can read the graph's state.
    (window as unknown as { __tsymbioteCy?: Core }).__tsymbioteCy = c;
    return () => {
      c.destroy();
      cy.current = null;
    };
  }, []);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    const want = toDefs(elements);
    const wantIds = new Set(want.map((d) => d.data.id as string));
    const before = new Set(c.nodes().map((n) => n.id()));
    let added = 0;
    const isCheap = elements.edges.length > CHEAP_EDGES;
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
            // cache valid) until the graph is small enough to show them,
            // when the comparison below catches up.
            if (e.data("category") !== nd.category) {
              const { label: _hidden, ...rest } = d.data;
              e.data(rest);
            }
          } else if (e.data("label") !== nd.label || e.data("category") !== nd.category || (e.isNode() && e.data("node") !== nd.node)) {
            e.data(d.data);
          }
          if (e.classes().join(" ") !== d.classes) e.classes(d.classes as string);
        } else {
          fresh.push(d);
        }
      }
      added = fresh.filter((d) => d.group === "nodes").length;
      c.add(fresh);
      if (isCheap !== cheap.current) {
        cheap.current = isCheap;
        c.style(style(isCheap));
      }
    });
    const nodeSetChanged = added > 0 || c.nodes().length !== before.size;
    if (nodeSetChanged && c.nodes().length > 0) {
      // Concentric rings, hosts (nodes with an adapter) inside: fast and
      // stable for any size, where force layouts crawl at 100 meshed nodes.
      c.layout({
        name: "concentric",
        animate: false,
        concentric: (n: cytoscape.NodeSingular) => (n.hasClass("host") ? 2 : 1),
        levelWidth: () => 1,
        minNodeSpacing: 40,
        avoidOverlap: true,
        sort: (a: cytoscape.NodeSingular, b: cytoscape.NodeSingular) => String(a.data("label")).localeCompare(String(b.data("label"))),
      } as cytoscape.LayoutOptions).run();
      c.fit(undefined, 40);
      // A few nodes would otherwise be blown up to the maximum zoom.
      if (c.zoom() > 1.4) {
        c.zoom(1.4);
        c.center();
      }
    }
  }, [elements]);

  useEffect(() => {
    const c = cy.current;
    if (!c) return;
    c.nodes(":selected").unselect();
    if (selected) c.getElementById(selected).select();
  }, [selected, elements]);

  return <div className="graph" ref={box} data-testid="graph" />;
}
