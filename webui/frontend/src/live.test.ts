import { describe, expect, it } from "vitest";
import { NO_FILTERS, buildElements } from "./graph";
import { Feed, LiveGraph, LiveMatrix, matrixAxes, rgba, scaleBounds } from "./live";
import { FAILED_COLOR, buildMatrix, cellKey } from "./matrix";
import { mesh, ping } from "./fixtures";

describe("Feed", () => {
  it("hands out only what was appended, and starts over on a new list", () => {
    const f = new Feed();
    const a = [ping("1", "2"), ping("2", "1")];
    expect(f.next(a)).toEqual({ fresh: a, reset: false, left: 0 });
    const b = [...a, ping("1", "3")];
    expect(f.next(b)).toEqual({ fresh: [b[2]], reset: false, left: 0 });
    expect(f.next(b)).toEqual({ fresh: [], reset: false, left: 0 });
    const c = [ping("3", "1")];
    expect(f.next(c)).toEqual({ fresh: c, reset: true, left: 0 });
    expect(f.next([])).toEqual({ fresh: [], reset: true, left: 0 });
  });

  it("hands out at most max at a time", () => {
    const f = new Feed();
    const a = [ping("1", "2"), ping("2", "1"), ping("1", "3"), ping("3", "1"), ping("2", "3")];
    expect(f.next(a, 2)).toEqual({ fresh: a.slice(0, 2), reset: false, left: 3 });
    expect(f.next(a, 2)).toEqual({ fresh: a.slice(2, 4), reset: false, left: 1 });
    expect(f.taken).toBe(4);
    const b = [...a, ping("3", "2")];
    expect(f.next(b, 2)).toEqual({ fresh: b.slice(4, 6), reset: false, left: 0 });
    const c = [ping("3", "1"), ping("1", "3"), ping("2", "1")];
    expect(f.next(c, 2)).toEqual({ fresh: c.slice(0, 2), reset: true, left: 1 });
    expect(f.next(c, 2)).toEqual({ fresh: c.slice(2), reset: false, left: 0 });
  });
});

describe("scaleBounds", () => {
  it("rounds out to quarter decades", () => {
    const [lo, hi] = scaleBounds(5, 480);
    expect(lo).toBeCloseTo(Math.pow(10, 0.5));
    expect(hi).toBeCloseTo(Math.pow(10, 2.75));
    expect(scaleBounds(4, 500)).toEqual(scaleBounds(5, 480));
    expect(scaleBounds(Infinity, -Infinity)).toEqual([0, 0]);
  });
});

describe("LiveMatrix", () => {
  it("holds what buildMatrix holds, batch by batch", () => {
    const rs = [
      ping("2", "1", { latencyMs: 4 }),
      ping("1", "2", { latencyMs: 1 }),
      ping("1", "3", { ok: false, error: "timeout", latencyMs: undefined }),
      ping("1", "2", { latencyMs: 2 }),
    ];
    const m = new LiveMatrix();
    m.add(rs.slice(0, 2));
    m.add(rs.slice(2));
    const want = buildMatrix(rs);
    expect(m.rows).toEqual(want.rows);
    expect(m.cols).toEqual(want.cols);
    expect([...m.cells.keys()].sort()).toEqual([...want.cells.keys()].sort());
    expect(m.cells.get(cellKey("1", "2"))!.latencyMs).toBe(2);
    expect(m.ok).toBe(2);
    expect(m.color(m.cells.get(cellKey("1", "3"))!)).toBe(FAILED_COLOR);
    expect(m.pixel(m.cells.get(cellKey("1", "3"))!)).toBe(rgba(FAILED_COLOR));
    for (const r of m.cells.values()) expect(m.pixel(r)).toBe(rgba(m.color(r)));
    expect(m.at(0, 2)).toMatchObject({ row: { id: "1" }, col: { id: "3" }, result: { ok: false } });
    expect(m.at(1, 2)?.result).toBeUndefined();
  });

  it("redraws all only when rows, columns or the scale change", () => {
    const m = new LiveMatrix();
    expect(m.add([ping("1", "2", { latencyMs: 10 }), ping("2", "1", { latencyMs: 15 })])).toBe("all");
    // Same rows and columns, latency within the scale's quarter decade.
    expect(m.add([ping("1", "2", { latencyMs: 11 })])).toEqual([cellKey("1", "2")]);
    expect(m.add([ping("1", "3", { latencyMs: 11 })])).toBe("all"); // a new column
    expect(m.add([ping("2", "3", { latencyMs: 400 })])).toBe("all"); // the scale grew
  });

  it("lays out axes known ahead once", () => {
    const m = new LiveMatrix({ rows: [{ id: "2", name: "b" }, { id: "1", name: "a" }], cols: [{ id: "1", name: "a" }, { id: "2", name: "b" }, { id: "3", name: "c" }] });
    expect(m.rows.map((r) => r.id)).toEqual(["1", "2"]);
    expect(m.cols.map((c) => c.id)).toEqual(["1", "2", "3"]);
    expect(m.take()).toBe("all");
    expect(m.add([ping("1", "2", { latencyMs: 10 }), ping("2", "1", { latencyMs: 15 })])).toBe("all"); // the scale
    // Rows and columns were there: only the cells.
    expect(m.add([ping("1", "3", { latencyMs: 11 })])).toEqual([cellKey("1", "3")]);
    expect(m.at(1, 2)).toMatchObject({ row: { id: "2" }, col: { id: "3" }, result: undefined });
    // One the axes left out still shows.
    expect(m.add([ping("4", "1", { latencyMs: 11 })])).toBe("all");
    expect(m.rows.map((r) => r.id)).toEqual(["1", "2", "4"]);
  });

  it("collects what changed until the canvas takes it", () => {
    const m = new LiveMatrix();
    m.add([ping("1", "2", { latencyMs: 10 }), ping("2", "1", { latencyMs: 15 })]);
    expect(m.take()).toBe("all");
    m.add([ping("1", "2", { latencyMs: 11 })]);
    m.add([ping("2", "1", { latencyMs: 11 })]);
    expect(m.take()).toEqual([cellKey("1", "2"), cellKey("2", "1")]);
    expect(m.take()).toEqual([]);
  });
});

describe("matrixAxes", () => {
  it("lists the hosts and the peers a ping fan-out pings", () => {
    const g = mesh(4);
    g.nodes[3].online = false;
    const all = matrixAxes(g, {});
    expect(all.rows.map((r) => r.id).sort()).toEqual(["1", "2", "3", "4"]);
    expect(all.cols.map((c) => c.id).sort()).toEqual(["1", "2", "3"]);
    expect(matrixAxes(g, { includeOffline: true }).cols).toHaveLength(4);
    const one = matrixAxes(g, { hosts: [g.edges.find((e) => e.source === "2")!.host], peers: ["1", "3"] });
    expect(one.rows).toEqual([{ id: "2", name: g.nodes[1].name }]);
    expect(one.cols.map((c) => c.id).sort()).toEqual(["1", "3"]);
  });
});

describe("LiveGraph", () => {
  it("marks nodes with failed edges and draws the focus node's, counting every edge", () => {
    const g = mesh(30); // 870 edges
    const lg = new LiveGraph(g, NO_FILTERS);
    expect(lg.edges).toBe(870);
    // Every pair from node 1 fails; the rest go over DERP.
    const rs = g.edges.map((e) => ping(e.source, e.target, e.source === "1" ? { ok: false, error: "no answer", latencyMs: undefined } : { path: "derp" }));
    lg.add(rs.slice(0, 400));
    lg.add(rs.slice(400));
    const el = lg.elements(null);
    const full = buildElements(g, rs, NO_FILTERS);
    expect(el.counts).toEqual(full.counts);
    expect(el.edges).toHaveLength(0);
    expect(el.hidden).toBe(870);
    expect(el.nodes).toHaveLength(30);
    expect(el.nodes.filter((n) => n.classes.includes("failing"))).toHaveLength(30); // node 1 and each peer it failed to reach
    expect(lg.failed("1")).toBe(29);
    expect(lg.failed("2")).toBe(1);
    const focused = lg.elements("5");
    expect(focused.edges).toHaveLength(58);
    expect(focused.hidden).toBe(870 - 58);
    expect(focused.edges.find((e) => e.data.source === "1")?.data.category).toBe("failed");
    expect(focused.edges.find((e) => e.data.source === "5" && e.data.target === "2")?.data.label).toBe("1.5 ms");
  });

  it("moves an edge between counts when a later result replaces one, and forgets on reset", () => {
    const g = mesh(3);
    const lg = new LiveGraph(g, NO_FILTERS);
    expect(lg.elements(null).counts.idle).toBe(6);
    lg.add([ping("1", "2", { ok: false, error: "x", latencyMs: undefined })]);
    let el = lg.elements(null);
    expect(el.counts).toMatchObject({ idle: 5, failed: 1 });
    expect(el.nodes.filter((n) => n.classes.includes("failing")).map((n) => n.data.id)).toEqual(["1", "2"]);
    lg.add([ping("1", "2")]);
    el = lg.elements(null);
    expect(el.counts).toMatchObject({ idle: 5, failed: 0, direct: 1 });
    expect(el.nodes.some((n) => n.classes.includes("failing"))).toBe(false);
    lg.reset();
    expect(lg.elements(null).counts.idle).toBe(6);
  });

  it("shows or takes away at most maxRings rings a call", () => {
    const g = mesh(30);
    const lg = new LiveGraph(g, NO_FILTERS);
    const a = lg.elements(null);
    // Every pair from node 1 fails: all 30 nodes are to get a ring.
    lg.add(g.edges.filter((e) => e.source === "1").map((e) => ping(e.source, e.target, { ok: false, error: "x", latencyMs: undefined })));
    expect(lg.ringsBehind).toBe(30);
    const ringed = (el: ReturnType<typeof lg.elements>) => el.nodes.filter((n) => n.classes.includes("failing")).length;
    const b = lg.elements(null, 1, 8);
    expect(b.nodes).not.toBe(a.nodes);
    expect(ringed(b)).toBe(8);
    expect(lg.ringsBehind).toBe(22);
    expect(ringed(lg.elements(null, 2, 8))).toBe(16);
    expect(ringed(lg.elements(null))).toBe(30);
    expect(lg.ringsBehind).toBe(0);
    // Caught up: the same nodes until a ring changes.
    const c = lg.elements(null, 3, 8);
    expect(lg.elements(null, 4, 8).nodes).toBe(c.nodes);
    lg.reset();
    expect(ringed(lg.elements(null))).toBe(0);
  });

  it("hands back the same nodes and edges until what it draws changes", () => {
    const g = mesh(4);
    const lg = new LiveGraph(g, NO_FILTERS);
    const a = lg.elements(null);
    lg.add([ping("1", "2"), ping("2", "3", { latencyMs: 3 })]); // counted, nothing drawn changes
    const b = lg.elements(null);
    expect(b.nodes).toBe(a.nodes);
    expect(b.edges).toBe(a.edges);
    expect(b.counts).not.toEqual(a.counts);
    lg.add([ping("2", "3", { ok: false, error: "x", latencyMs: undefined })]); // 2 and 3 get a ring
    expect(lg.elements(null).nodes).not.toBe(a.nodes);
    const f = lg.elements("1").edges;
    expect(f).toHaveLength(6);
    lg.add([ping("1", "3", { latencyMs: 9 })]);
    const f2 = lg.elements("1").edges;
    expect(f2).not.toBe(f);
    expect(f2.find((e) => e.data.target === "3")?.data.label).toBe("9.0 ms");
  });
});

describe("rgba", () => {
  it("packs hex and hsl colours as ImageData bytes read little-endian", () => {
    expect(rgba("#d93636")).toBe(0xff3636d9);
    expect(rgba("#f0f0f0")).toBe(0xfff0f0f0);
    expect(rgba("hsl(120, 100%, 50%)")).toBe(0xff00ff00);
    expect(rgba("hsl(0, 100%, 50%)")).toBe(0xff0000ff);
    expect(rgba("hsl(240, 100%, 50%)")).toBe(0xffff0000);
    // heatColor's green: hsl(120, 65%, 45%) is rgb(40, 189, 40).
    expect(rgba("hsl(120, 65%, 45%)")).toBe(0xff28bd28);
    expect(rgba("red")).toBe(0);
  });
});
