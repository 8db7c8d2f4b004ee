import { describe, expect, it } from "vitest";
import { NO_FILTERS, buildElements } from "./graph";
import { Feed, LiveGraph, LiveMatrix, rgba, scaleBounds } from "./live";
import { FAILED_COLOR, buildMatrix, cellKey } from "./matrix";
import { mesh, ping } from "./fixtures";

describe("Feed", () => {
  it("hands out only what was appended, and starts over on a new list", () => {
    const f = new Feed();
    const a = [ping("1", "2"), ping("2", "1")];
    expect(f.next(a)).toEqual({ fresh: a, reset: false });
    const b = [...a, ping("1", "3")];
    expect(f.next(b)).toEqual({ fresh: [b[2]], reset: false });
    expect(f.next(b)).toEqual({ fresh: [], reset: false });
    const c = [ping("3", "1")];
    expect(f.next(c)).toEqual({ fresh: c, reset: true });
    expect(f.next([])).toEqual({ fresh: [], reset: true });
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

describe("LiveGraph", () => {
  it("draws the failed edges and the focus node's, counting every edge", () => {
    const g = mesh(30); // 870 edges
    const lg = new LiveGraph(g, NO_FILTERS);
    expect(lg.edges).toBe(870);
    const rs = g.edges.map((e, i) => ping(e.source, e.target, i % 10 === 0 ? { ok: false, error: "no answer", latencyMs: undefined } : { path: "derp" }));
    lg.add(rs.slice(0, 400));
    lg.add(rs.slice(400));
    const el = lg.elements(null);
    const full = buildElements(g, rs, NO_FILTERS);
    expect(el.counts).toEqual(full.counts);
    expect(el.edges).toHaveLength(87);
    expect(el.edges.every((e) => e.data.category === "failed" && e.classes === "cat-failed pinged")).toBe(true);
    expect(el.hidden).toBe(870 - 87);
    expect(el.nodes).toHaveLength(30);
    // Node 5's 58 edges, 6 of them failed and drawn anyway.
    const focused = lg.elements("5");
    const ids = new Set(focused.edges.map((e) => e.data.id));
    expect(ids.size).toBe(focused.edges.length);
    expect(focused.edges.filter((e) => e.data.source === "5" || e.data.target === "5")).toHaveLength(58);
    expect(focused.edges.find((e) => e.data.source === "5" && e.data.category === "derp")?.data.label).toBe("1.5 ms");
  });

  it("moves an edge between counts when a later result replaces one, and forgets on reset", () => {
    const g = mesh(3);
    const lg = new LiveGraph(g, NO_FILTERS);
    expect(lg.elements(null).counts.idle).toBe(6);
    lg.add([ping("1", "2", { ok: false, error: "x", latencyMs: undefined })]);
    expect(lg.elements(null).counts).toMatchObject({ idle: 5, failed: 1 });
    lg.add([ping("1", "2")]);
    const el = lg.elements(null);
    expect(el.counts).toMatchObject({ idle: 5, failed: 0, direct: 1 });
    expect(el.edges).toHaveLength(0);
    lg.reset();
    expect(lg.elements(null).counts.idle).toBe(6);
  });

  it("hands back the same edges until what it draws changes", () => {
    const g = mesh(4);
    const lg = new LiveGraph(g, NO_FILTERS);
    const a = lg.elements(null).edges;
    lg.add([ping("1", "2")]); // idle to direct: not drawn without focus, but counted
    expect(lg.elements(null).edges).not.toBe(a); // the category moved
    const b = lg.elements(null).edges;
    lg.add([ping("1", "2", { latencyMs: 3 })]); // direct again
    expect(lg.elements(null).edges).toBe(b);
    const f = lg.elements("1").edges;
    expect(f).toHaveLength(6);
    lg.add([ping("1", "3", { path: "direct" }), ping("1", "3", { latencyMs: 9 })]);
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
