import { describe, expect, it } from "vitest";
import { CSV_COLUMNS, csvField, exportName, toCSV, toJSON } from "./export";
import type { FanoutState } from "./api";
import { ping } from "./fixtures";

const state: FanoutState = {
  id: "abc", request: { kind: "ping", pingType: "disco" }, total: 2, completed: 2, failed: 1,
  done: true, canceled: false, started: "2026-11-21T00:00:00Z", elapsedMs: 12,
};

describe("export", () => {
  const results = [ping("1", "2", { latencyMs: 1.5 }), ping("2", "1", { ok: false, error: 'said "no", then, left\nearly' })];

  it("writes JSON with one row per call and the fan-out's summary", () => {
    const doc = JSON.parse(toJSON(state, results, new Date("2026-11-21T01:02:03Z")));
    expect(doc.results).toHaveLength(2);
    expect(doc.fanout.id).toBe("abc");
    expect(doc.fanout.results).toBeUndefined();
    expect(doc.exportedAt).toBe("2026-11-21T01:02:03.000Z");
    expect(doc.results[0].latencyMs).toBe(1.5);
  });

  it("writes CSV with a header and RFC 4180 quoting", () => {
    const csv = toCSV(results);
    const lines = csv.split("\r\n");
    expect(lines[0]).toBe(CSV_COLUMNS.join(","));
    expect(lines).toHaveLength(4); // header, two rows, trailing empty
    expect(csv).toContain('"said ""no"", then, left\nearly"');
    expect(lines[1].split(",")[CSV_COLUMNS.indexOf("latencyMs")]).toBe("1.5");
  });

  it("quotes only when needed", () => {
    expect(csvField("plain")).toBe("plain");
    expect(csvField(" padded")).toBe('" padded"');
    expect(csvField(undefined)).toBe("");
    expect(csvField(["A 1.2.3.4", "A 5.6.7.8"])).toBe("A 1.2.3.4; A 5.6.7.8");
    expect(csvField(false)).toBe("false");
  });

  it("names files by kind and time", () => {
    expect(exportName(state, "csv", new Date("2026-11-21T01:02:03Z"))).toBe("tsymbiote-ping-2026-11-21T01-02-03-000Z.csv");
    expect(exportName(null, "json", new Date("2026-11-21T01:02:03Z"))).toBe("tsymbiote-results-2026-11-21T01-02-03-000Z.json");
  });
});
