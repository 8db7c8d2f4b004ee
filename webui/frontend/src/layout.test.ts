import { describe, expect, it } from "vitest";
import type { LayoutNode } from "./layout";
import {
  countOverlaps, extent, fitLabels, labelBox, labelSize, layoutGraph, overlappingPairs, overlaps, shortLabel, sideFor, sideStyle,
} from "./layout";

// A label's width as 6.2 px per character of 11 px text, about what
// system-ui measures.
const label = (name: string) => labelSize(name.length * 6.2, 11, 2);
const nodes = (names: string[], hosts = names.length): LayoutNode[] =>
  names.map((n, i) => ({ id: n, host: i < hosts, label: label(n) }));
const names = (n: number, prefix = "demo-node-") => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(2, "0")}`);
const canvas = { width: 960, height: 820, padding: 30, gap: 4 };

describe("boxes", () => {
  it("find overlaps, and only those", () => {
    const a = { x1: 0, y1: 0, x2: 10, y2: 10 };
    expect(overlaps(a, { x1: 9, y1: 9, x2: 20, y2: 20 })).toBe(true);
    expect(overlaps(a, { x1: 10, y1: 0, x2: 20, y2: 10 })).toBe(false);
    expect(overlaps(a, { x1: 12, y1: 0, x2: 20, y2: 10 }, 3)).toBe(true);
    const boxes = [a, { x1: 30, y1: 0, x2: 40, y2: 10 }, { x1: 5, y1: 5, x2: 35, y2: 6 }, { x1: 0, y1: 50, x2: 40, y2: 60 }];
    expect(overlappingPairs(boxes)).toEqual([[0, 2], [1, 2]]);
  });

  it("size labels as cytoscape bounds them", () => {
    // Text 40 wide at 11 px, padding 2: measured 42 x 13, bounded with
    // padding and a 2 px margin of error on each side.
    expect(labelSize(39.2, 11, 2)).toEqual({ w: 50, h: 21 });
  });

  it("put labels outward, on the side facing away from the centre", () => {
    expect(sideFor(1, 0)).toBe("r");
    expect(sideFor(0, 1)).toBe("b");
    expect(sideFor(-1, -1)).toBe("tl");
    expect(sideFor(1, -0.2)).toBe("r");
    expect(sideFor(0.2, -1)).toBe("t");
    expect(sideFor(0, 0)).toBe("b");
    expect(sideStyle("tr")).toMatchObject({ halign: "right", valign: "top" });
    expect(sideStyle("b")).toEqual({ halign: "center", valign: "bottom", marginX: 0, marginY: 3 });
    const l = { w: 40, h: 20 };
    expect(labelBox(0, 0, "b", l)).toEqual({ x1: -20, y1: 14, x2: 20, y2: 34 });
    expect(labelBox(0, 0, "l", l)).toEqual({ x1: -54, y1: -10, x2: -14, y2: 10 });
    const tr = labelBox(0, 0, "tr", l);
    expect(tr.x1).toBeGreaterThan(0);
    expect(tr.y2).toBeLessThan(0);
  });
});

describe("layoutGraph", () => {
  const check = (ns: LayoutNode[], o = canvas) => {
    const l = layoutGraph(ns, o);
    expect(l.pos.size).toBe(ns.length);
    expect(l.overlaps).toBe(0);
    expect(countOverlaps(ns, l.pos, o.gap)).toBe(0);
    return l;
  };
  const extentOf = (ns: LayoutNode[], l: ReturnType<typeof layoutGraph>) => extent(ns, l.pos);

  it("lays the demo's 7 drawn nodes out over the whole canvas", () => {
    const ns = nodes([...names(4), "demo-default-pod-1", "demo-default-pod-2", "tsymbiote-webui-demo"], 6);
    const l = check(ns);
    expect(l.scale).toBe(1);
    const e = extentOf(ns, l);
    // The canvas less its padding is 900 x 760.
    expect(e.w).toBeGreaterThan(880);
    expect(e.w).toBeLessThanOrEqual(900);
    expect(e.h).toBeGreaterThan(740);
    expect(e.h).toBeLessThanOrEqual(760);
  });

  it("fills a wide canvas's aspect ratio", () => {
    const ns = nodes(names(12));
    const e = extentOf(ns, check(ns, { ...canvas, width: 1600, height: 700 }));
    expect(e.w / e.h).toBeGreaterThan(1.8);
  });

  it("fits 50 labels without overlap and without shrinking them", () => {
    const l = check(nodes([...names(36), ...names(13, "laptop-"), "tsymbiote-webui-demo"], 36));
    expect(l.scale).toBe(1);
  });

  it("grows the drawing when the labels do not fit the canvas", () => {
    const l = check(nodes(names(100, "node-")));
    expect(l.scale).toBeGreaterThan(1);
    expect(l.scale).toBeLessThan(2);
  });

  it("puts a lone host in the centre and few hosts inside", () => {
    const one = check(nodes(["server", ...names(10, "laptop-")], 1));
    expect(one.pos.get("server")).toEqual({ x: 0, y: 0, side: "b" });
    const three = check(nodes([...names(3), ...names(20, "laptop-")], 3));
    const r = (id: string) => Math.hypot(three.pos.get(id)!.x, three.pos.get(id)!.y);
    expect(Math.max(...names(3).map(r))).toBeLessThan(Math.min(...names(20, "laptop-").map(r)));
  });

  it("keeps the caller's order clockwise from the top", () => {
    const l = check(nodes(names(8)));
    const first = l.pos.get("demo-node-01")!;
    expect(first.x).toBeCloseTo(0);
    expect(first.side).toBe("t");
    expect(l.pos.get("demo-node-03")!.x).toBeGreaterThan(0);
  });

  it("handles one node and none", () => {
    expect(layoutGraph([], canvas).pos.size).toBe(0);
    check(nodes(["alone"]));
  });
});

describe("fitLabels", () => {
  const c = (id: string, x: number, y: number, rank = 0) => ({ id, x, y, size: { w: 40, h: 14 }, rank });
  it("shows labels in rank order where they fit", () => {
    const shown = fitLabels([c("b", 0, 0, 1), c("a", 10, 5, 0), c("c", 100, 0, 1), c("d", 0, 100)], [{ x1: -10, y1: 90, x2: 10, y2: 110 }], 2);
    expect([...shown].sort()).toEqual(["a", "c"]);
  });
  it("is stable for equal ranks", () => {
    expect([...fitLabels([c("y", 0, 0), c("x", 5, 0)], [], 0)]).toEqual(["x"]);
  });
});

describe("shortLabel", () => {
  it("keeps short names and shortens long ones at both ends", () => {
    expect(shortLabel("demo-node-1")).toBe("demo-node-1");
    const s = shortLabel("cluster-a-some-namespace-a-long-pod-name-5f7d9c-abc12");
    expect(s).toHaveLength(28);
    expect(s.startsWith("cluster-a-some-")).toBe(true);
    expect(s.endsWith("c-abc12")).toBe(true);
  });
});
