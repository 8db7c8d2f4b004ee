// Pure layout: where each node goes and on which side of it its label
// sits, so that no two labels overlap at the size the canvas shows them,
// and which edge labels fit around them. GraphView measures text, hands
// the sizes in and applies the answer; nothing here touches cytoscape.

// Box is an axis-aligned rectangle in model coordinates (y grows down).
export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

// overlaps reports whether a and b come closer than gap.
export function overlaps(a: Box, b: Box, gap = 0): boolean {
  return a.x1 < b.x2 + gap && b.x1 < a.x2 + gap && a.y1 < b.y2 + gap && b.y1 < a.y2 + gap;
}

// overlappingPairs lists the index pairs of boxes that overlap (a sweep
// along x, so n boxes cost about n log n when few overlap).
export function overlappingPairs(boxes: Box[], gap = 0): [number, number][] {
  const order = boxes.map((_, i) => i).sort((i, j) => boxes[i].x1 - boxes[j].x1);
  const out: [number, number][] = [];
  for (let oi = 0; oi < order.length; oi++) {
    const a = boxes[order[oi]];
    for (let oj = oi + 1; oj < order.length; oj++) {
      const b = boxes[order[oj]];
      if (b.x1 >= a.x2 + gap) break;
      if (overlaps(a, b, gap)) out.push([Math.min(order[oi], order[oj]), Math.max(order[oi], order[oj])]);
    }
  }
  return out;
}

// Side is where a node's label sits: one of eight compass points (t is
// above, br below and to the right, ...).
export type Side = "t" | "tr" | "r" | "br" | "b" | "bl" | "l" | "tl";

export const SIDES: Side[] = ["r", "br", "b", "bl", "l", "tl", "t", "tr"];

// sideFor is the side a label takes on a node whose outward direction
// (away from the drawing's centre) is (dx, dy): labels point away from the
// ring, where no edge runs.
export function sideFor(dx: number, dy: number): Side {
  if (dx === 0 && dy === 0) return "b";
  const deg = (Math.atan2(dy, dx) * 180) / Math.PI; // (-180, 180], y down
  const k = Math.round(((deg + 360) % 360) / 45) % 8;
  return SIDES[k];
}

// NodeGeometry is how nodes and their labels are drawn: GraphView's style
// takes its label margins from sideStyle, so the boxes computed here are
// the ones cytoscape draws.
export interface NodeGeometry {
  size: number; // node diameter
  margin: number; // label's distance from the node's box
}

export const GEOMETRY: NodeGeometry = { size: 22, margin: 3 };

// sideStyle is the cytoscape label placement for a side. A corner label
// is pulled in diagonally, towards the circle, which its box corner would
// otherwise leave visibly apart.
export function sideStyle(side: Side, geo: NodeGeometry = GEOMETRY) {
  const corner = side.length === 2;
  const m = corner ? geo.margin - geo.size * 0.13 : geo.margin;
  const h = side.includes("r") ? "right" : side.includes("l") ? "left" : "center";
  const v = side.includes("t") ? "top" : side.includes("b") ? "bottom" : "center";
  return {
    halign: h,
    valign: v,
    marginX: h === "right" ? m : h === "left" ? -m : 0,
    marginY: v === "bottom" ? m : v === "top" ? -m : 0,
  } as const;
}

// LabelSize is a label's bounding box as cytoscape reports it.
export interface LabelSize {
  w: number;
  h: number;
}

// labelSize is the bounding box cytoscape gives a label whose text is
// textWidth wide in fontSize pixels with a background padding of pad:
// the text box grows by pad once when measured and by pad plus a 2 px
// margin of error on each side when bounded.
export function labelSize(textWidth: number, fontSize: number, pad: number): LabelSize {
  const chrome = pad + 2 * (pad + 2);
  return { w: Math.ceil(textWidth) + chrome, h: fontSize + chrome };
}

// labelBox is where the label of a node at (x, y) lies.
export function labelBox(x: number, y: number, side: Side, l: LabelSize, geo: NodeGeometry = GEOMETRY): Box {
  const st = sideStyle(side, geo);
  const r = geo.size / 2;
  const ax = st.halign === "right" ? x + r : st.halign === "left" ? x - r : x;
  const ay = st.valign === "bottom" ? y + r : st.valign === "top" ? y - r : y;
  const x1 = st.halign === "right" ? ax : st.halign === "left" ? ax - l.w : ax - l.w / 2;
  const y1 = st.valign === "bottom" ? ay : st.valign === "top" ? ay - l.h : ay - l.h / 2;
  return { x1: x1 + st.marginX, y1: y1 + st.marginY, x2: x1 + st.marginX + l.w, y2: y1 + st.marginY + l.h };
}

export function nodeBox(x: number, y: number, geo: NodeGeometry = GEOMETRY): Box {
  const r = geo.size / 2;
  return { x1: x - r, y1: y - r, x2: x + r, y2: y + r };
}

export interface LayoutNode {
  id: string;
  host: boolean; // hosts go first, or inside when few
  label: LabelSize;
}

export interface Placement {
  x: number;
  y: number;
  side: Side;
}

export interface Layout {
  pos: Map<string, Placement>;
  // scale is how much larger than the canvas the drawing had to grow for
  // its labels to fit: 1 when it fits, and then the canvas shows it at
  // zoom 1 (labels at their font size).
  scale: number;
  overlaps: number; // label or node boxes still overlapping (0 unless it gave up)
}

export interface LayoutOptions {
  width: number; // canvas, px
  height: number;
  padding: number; // kept clear around the drawing
  gap: number; // kept clear between labels
  geo?: NodeGeometry;
}

// layoutGraph places nodes on ellipses that fill the canvas: every node
// on one ring (a meshed tailnet reads best as a circle, every edge a
// chord), or, when few nodes are hosts, the hosts on an inner ring (one
// host in the centre) and the rest around them. Labels sit outside their
// ring, and the nodes are spaced by what their labels need where they
// stand: at the sides a label needs only its height, at the top and
// bottom its width. If the labels do not fit in the canvas the drawing
// grows, and the canvas shows it zoomed out (scale > 1).
export function layoutGraph(nodes: LayoutNode[], o: LayoutOptions): Layout {
  const geo = o.geo ?? GEOMETRY;
  const pos = new Map<string, Placement>();
  if (nodes.length === 0) return { pos, scale: 1, overlaps: 0 };
  // The caller's order is kept within each ring.
  const hosts = nodes.filter((n) => n.host);
  const rest = nodes.filter((n) => !n.host);
  let inner: LayoutNode[] = [];
  let outer = [...hosts, ...rest];
  if (hosts.length >= 1 && rest.length >= 3 && hosts.length * 4 <= nodes.length) {
    inner = hosts;
    outer = rest;
  }
  const maxW = Math.max(...nodes.map((n) => n.label.w));
  const maxH = Math.max(...nodes.map((n) => n.label.h));
  const reach = geo.size / 2 + geo.margin;
  // search finds the smallest scale (from start) at which the rings with
  // semi-axes a0 and b0 keep every label clear.
  const search = (a0: number, b0: number, start = 1): Layout => {
    let best: Layout | null = null;
    for (let scale = start, tries = 0; tries < 40; tries++, scale *= 1.08) {
      pos.clear();
      const grow = placeRing(outer, a0 * scale, b0 * scale, o.gap, geo, pos);
      if (grow > 1) {
        scale *= grow / 1.08; // the next try is exactly large enough
        continue;
      }
      if (inner.length === 1) {
        pos.set(inner[0].id, { x: 0, y: 0, side: "b" });
      } else if (inner.length > 1) {
        // Well inside the outer ring, so that the hosts' edges fan out.
        if (placeRing(inner, a0 * scale * 0.4, b0 * scale * 0.4, o.gap, geo, pos) > 1) continue;
      }
      const n = countOverlaps(nodes, pos, o.gap, geo);
      const l = { pos: new Map(pos), scale, overlaps: n };
      if (!best || n < best.overlaps) best = l;
      if (n === 0) break;
    }
    return best ?? { pos: new Map(pos), scale: 1, overlaps: countOverlaps(nodes, pos, o.gap, geo) };
  };
  // First guess: the outer ring leaves room for the widest label at both
  // sides and the tallest above and below.
  const room = { w: o.width - 2 * o.padding, h: o.height - 2 * o.padding };
  let a0 = Math.max(40, room.w / 2 - reach - maxW);
  let b0 = Math.max(40, room.h / 2 - reach - maxH);
  let l = search(a0, b0);
  // Then fill the canvas: only some nodes have their label at the sides,
  // and those are seldom the widest, so the ring may widen (or heighten)
  // by what the drawing leaves free, as long as the labels stay clear.
  // Nodes move as the ring changes shape, and another label may come to
  // the side: a step that overshoots the canvas is tried again halved.
  const fits = (c: Layout) => {
    const e = extent(nodes, c.pos, geo);
    return c.overlaps === 0 && e.w / c.scale <= room.w + 0.5 && e.h / c.scale <= room.h + 0.5;
  };
  for (let pass = 0; pass < 4 && l.overlaps === 0; pass++) {
    const e = extent(nodes, l.pos, geo);
    let dw = Math.max(0, room.w - e.w / l.scale) / 2;
    let dh = Math.max(0, room.h - e.h / l.scale) / 2;
    if (dw < 2 && dh < 2) break;
    // A larger scale than now is no better: start there.
    let next = search(a0 + dw, b0 + dh, l.scale);
    if (!fits(next) || next.scale > l.scale) {
      dw /= 2;
      dh /= 2;
      next = search(a0 + dw, b0 + dh, l.scale);
      if (!fits(next) || next.scale > l.scale) break;
    }
    a0 += dw;
    b0 += dh;
    l = next;
  }
  return l;
}

// extent is the size of the drawing, labels included.
export function extent(nodes: LayoutNode[], pos: Map<string, Placement>, geo: NodeGeometry = GEOMETRY): { w: number; h: number } {
  let x1 = Infinity;
  let y1 = Infinity;
  let x2 = -Infinity;
  let y2 = -Infinity;
  for (const n of nodes) {
    const p = pos.get(n.id);
    if (!p) continue;
    for (const b of [labelBox(p.x, p.y, p.side, n.label, geo), nodeBox(p.x, p.y, geo)]) {
      x1 = Math.min(x1, b.x1);
      y1 = Math.min(y1, b.y1);
      x2 = Math.max(x2, b.x2);
      y2 = Math.max(y2, b.y2);
    }
  }
  return x2 >= x1 ? { w: x2 - x1, h: y2 - y1 } : { w: 0, h: 0 };
}

// countOverlaps counts pairs of label and node boxes that come closer than
// gap (a node's own label touches it by design and is left out).
export function countOverlaps(nodes: LayoutNode[], pos: Map<string, Placement>, gap: number, geo: NodeGeometry = GEOMETRY): number {
  const boxes: Box[] = [];
  const owner: number[] = [];
  nodes.forEach((n, i) => {
    const p = pos.get(n.id);
    if (!p) return;
    boxes.push(labelBox(p.x, p.y, p.side, n.label, geo), nodeBox(p.x, p.y, geo));
    owner.push(i, i);
  });
  return overlappingPairs(boxes, gap).filter(([i, j]) => owner[i] !== owner[j]).length;
}

// placeRing puts nodes on the ellipse with semi-axes a and b, clockwise
// from the top, evenly spaced except where two labels need more room
// than that. It returns how much the ellipse must grow for the labels to
// fit (<= 1: they fit).
function placeRing(nodes: LayoutNode[], a: number, b: number, gap: number, geo: NodeGeometry, pos: Map<string, Placement>): number {
  const n = nodes.length;
  if (n === 0) return 0;
  const arc = arcTable(a, b);
  const perimeter = arc.len[arc.len.length - 1];
  if (n === 1) {
    pos.set(nodes[0].id, { x: 0, y: -b, side: "t" });
    return 0;
  }
  const placeAt = (s: number): Placement => {
    const { x, y, t } = arc.pointAt(s);
    // Labels face along the ellipse's outward normal at parameter t.
    return { x, y, side: sideFor(b * Math.cos(t), a * Math.sin(t)) };
  };
  const boxes = (nd: LayoutNode, p: Placement) => [labelBox(p.x, p.y, p.side, nd.label, geo), nodeBox(p.x, p.y, geo)];
  // need is how far along the ring the node after i must be from i, at
  // s, for their nodes and labels to keep gap clear of each other:
  // found by trying, since what a label needs turns with the ring (its
  // width at the top, its height at the sides, and the side it is on).
  const need = (s: number, i: number) => {
    const mine = boxes(nodes[i], placeAt(s));
    const next = nodes[(i + 1) % n];
    const clear = (d: number) => {
      const theirs = boxes(next, placeAt(s + d));
      return !mine.some((m) => theirs.some((t) => overlaps(m, t, gap)));
    };
    // Coarse steps out, then halving back to within a pixel.
    const step = 8;
    let d = geo.size + gap;
    while (d < perimeter / 2 && !clear(d)) d += step;
    let lo = Math.max(geo.size + gap, d - step);
    while (d - lo > 1) {
      const mid = (lo + d) / 2;
      if (clear(mid)) d = mid;
      else lo = mid;
    }
    return d;
  };
  // walk places each node at least u along the ring from the last, more
  // where their labels need it, and returns where they are and how far
  // it went.
  const walk = (u: number) => {
    const at: number[] = [0];
    let s = 0;
    for (let i = 0; i < n; i++) {
      s += Math.max(u, need(s, i));
      if (i + 1 < n) at.push(s);
    }
    return { at, total: s };
  };
  const tight = walk(0);
  if (tight.total > perimeter) return tight.total / perimeter;
  // Spread the slack: the largest u whose walk still closes the ring, so
  // that nodes are evenly spaced except where their labels need more.
  let lo = 0;
  let hi = perimeter / n;
  let at = tight.at;
  for (let it = 0; it < 12; it++) {
    const u = (lo + hi) / 2;
    const w = walk(u);
    if (w.total <= perimeter) {
      lo = u;
      at = w.at;
    } else {
      hi = u;
    }
  }
  nodes.forEach((nd, i) => pos.set(nd.id, placeAt(at[i])));
  return tight.total / perimeter;
}

interface ArcTable {
  len: number[]; // cumulative length at each sample
  pointAt(s: number): { x: number; y: number; t: number };
  tangentAt(s: number): number; // direction of travel, radians
}

// arcTable samples the ellipse x = a cos t, y = b sin t from the top
// (t = -pi/2) clockwise on screen, so that points can be found by the
// distance travelled along it.
function arcTable(a: number, b: number): ArcTable {
  const K = 1440;
  const ts: number[] = [];
  const len: number[] = [0];
  for (let k = 0; k <= K; k++) ts.push(-Math.PI / 2 + (2 * Math.PI * k) / K);
  for (let k = 1; k <= K; k++) {
    const dx = a * (Math.cos(ts[k]) - Math.cos(ts[k - 1]));
    const dy = b * (Math.sin(ts[k]) - Math.sin(ts[k - 1]));
    len.push(len[k - 1] + Math.hypot(dx, dy));
  }
  const paramAt = (s: number) => {
    const total = len[K];
    s = ((s % total) + total) % total;
    let lo = 0;
    let hi = K;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (len[mid] <= s) lo = mid;
      else hi = mid;
    }
    const f = len[hi] > len[lo] ? (s - len[lo]) / (len[hi] - len[lo]) : 0;
    return ts[lo] + f * (ts[hi] - ts[lo]);
  };
  return {
    len,
    pointAt(s) {
      const t = paramAt(s);
      return { x: a * Math.cos(t), y: b * Math.sin(t), t };
    },
    tangentAt(s) {
      const t = paramAt(s);
      return Math.atan2(b * Math.cos(t), -a * Math.sin(t));
    },
  };
}

// LabelCandidate is an edge label that may be shown, centred at (x, y).
export interface LabelCandidate {
  id: string;
  x: number;
  y: number;
  size: LabelSize;
  rank: number; // lower goes first
}

// fitLabels picks the edge labels to show: in rank order (then by id, so
// the answer is stable), each that keeps gap clear of the obstacles (nodes
// and their labels) and of the labels already picked. The rest stay
// hidden until hovered.
export function fitLabels(cands: LabelCandidate[], obstacles: Box[], gap: number): Set<string> {
  const cell = 64;
  const grid = new Map<string, Box[]>();
  const keys = (b: Box) => {
    const out: string[] = [];
    for (let gx = Math.floor((b.x1 - gap) / cell); gx <= Math.floor((b.x2 + gap) / cell); gx++) {
      for (let gy = Math.floor((b.y1 - gap) / cell); gy <= Math.floor((b.y2 + gap) / cell); gy++) out.push(`${gx},${gy}`);
    }
    return out;
  };
  const put = (b: Box) => {
    for (const k of keys(b)) {
      const l = grid.get(k);
      if (l) l.push(b);
      else grid.set(k, [b]);
    }
  };
  obstacles.forEach(put);
  const shown = new Set<string>();
  const order = [...cands].sort((p, q) => p.rank - q.rank || (p.id < q.id ? -1 : p.id > q.id ? 1 : 0));
  for (const c of order) {
    const b = { x1: c.x - c.size.w / 2, y1: c.y - c.size.h / 2, x2: c.x + c.size.w / 2, y2: c.y + c.size.h / 2 };
    if (keys(b).some((k) => grid.get(k)?.some((o) => overlaps(o, b, gap)))) continue;
    put(b);
    shown.add(c.id);
  }
  return shown;
}

// shortLabel keeps a long name readable in the graph: its start and its
// end (where names differ most: pod-1, pod-2) around an ellipsis. The
// full name is on hover.
export function shortLabel(name: string, max = 28): string {
  if (name.length <= max) return name;
  const tail = Math.min(8, Math.floor((max - 1) / 3));
  return name.slice(0, max - 1 - tail) + "…" + name.slice(name.length - tail);
}
