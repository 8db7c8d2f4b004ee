import { describe, expect, it } from "vitest";
import { FAILED_COLOR, buildMatrix, cellKey, heatColor } from "./matrix";
import { dns, ping } from "./fixtures";

describe("buildMatrix", () => {
  it("has a row per host, a column per peer and a cell per pair", () => {
    const m = buildMatrix([
      ping("2", "1", { latencyMs: 4 }),
      ping("1", "2", { latencyMs: 1 }),
      ping("1", "3", { ok: false, error: "timeout", latencyMs: undefined }),
    ]);
    expect(m.rows.map((r) => r.name)).toEqual(["node-1", "node-2"]);
    expect(m.cols.map((c) => c.name)).toEqual(["node-1", "node-2", "node-3"]);
    expect(m.cells.size).toBe(3);
    expect(m.min).toBe(1);
    expect(m.max).toBe(4);
    expect(m.cells.get(cellKey("1", "3"))!.color).toBe(FAILED_COLOR);
    expect(m.cells.get(cellKey("1", "3"))!.text).toBe("✕");
    expect(m.cells.get(cellKey("1", "2"))!.text).toBe("1.0");
    expect(m.cells.has(cellKey("2", "3"))).toBe(false);
  });

  it("keeps the last result of a pair", () => {
    const m = buildMatrix([ping("1", "2", { ok: false }), ping("1", "2", { latencyMs: 2 })]);
    expect(m.cells.get(cellKey("1", "2"))!.result.ok).toBe(true);
  });

  it("ignores DNS results and copes with none", () => {
    const m = buildMatrix([dns("1", "x")]);
    expect(m.rows).toHaveLength(0);
    expect(m.min).toBe(0);
  });

  it("shades fast green and slow orange on a log scale, leaving red to failures", () => {
    expect(heatColor(1, 1, 100)).toBe("hsl(120, 65%, 45%)");
    expect(heatColor(100, 1, 100)).toBe("hsl(35, 65%, 45%)");
    expect(heatColor(10, 1, 100)).toBe("hsl(78, 65%, 45%)");
    expect(heatColor(5, 5, 5)).toBe("hsl(120, 60%, 45%)");
  });
});
