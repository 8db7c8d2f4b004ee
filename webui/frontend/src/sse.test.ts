import { describe, expect, it } from "vitest";
import { sseParser } from "./sse";

describe("sseParser", () => {
  it("parses events split anywhere across chunks", () => {
    const text = 'event: start\ndata: {"id":"a"}\n\n: a comment\n\nevent: results\ndata: [1,2]\n\ndata: line one\ndata: line two\n\nevent: done\ndata: {}\n\n';
    const want = [
      { type: "start", data: '{"id":"a"}' },
      { type: "results", data: "[1,2]" },
      { type: "message", data: "line one\nline two" },
      { type: "done", data: "{}" },
    ];
    for (let size = 1; size <= text.length; size++) {
      const p = sseParser();
      const got = [];
      for (let i = 0; i < text.length; i += size) got.push(...p(text.slice(i, i + size)));
      expect(got, `chunks of ${size}`).toEqual(want);
    }
  });

  it("keeps an unfinished event for the next chunk and takes CRLF", () => {
    const p = sseParser();
    expect(p("event: results\r\ndata: [1]")).toEqual([]);
    expect(p("\r\n\r\nevent:done\r")).toEqual([{ type: "results", data: "[1]" }]);
    expect(p("\ndata:x\r\n\r\n")).toEqual([{ type: "done", data: "x" }]);
  });
});
