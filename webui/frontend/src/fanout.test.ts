import { describe, expect, it } from "vitest";
import type { FanoutAction, FanoutModel } from "./fanout";
import { fanoutReducer, initialFanout, isBusy, progressPercent } from "./fanout";
import { dns, fanoutState, ping } from "./fixtures";

// run applies actions in order from m.
function run(m: FanoutModel, ...actions: FanoutAction[]): FanoutModel {
  return actions.reduce(fanoutReducer, m);
}

const started = run(initialFanout, { type: "start" }, { type: "started", state: fanoutState("f1", 4) });

describe("fanoutReducer", () => {
  it("start: the request is in flight, the last error is gone and no new fan-out may start", () => {
    const m = run({ ...initialFanout, error: "old" }, { type: "start" });
    expect(m.phase).toBe("starting");
    expect(m.error).toBeNull();
    expect(isBusy(m)).toBe(true);
  });

  it("started: the accepted fan-out replaces the last one and its results", () => {
    const before = run(started, { type: "results", id: "f1", results: [ping("1", "2")] }, { type: "done", state: fanoutState("f1", 4, undefined, { done: true }) });
    const m = run(before, { type: "start" }, { type: "started", state: fanoutState("f2", 6) });
    expect(m.phase).toBe("running");
    expect(m.state?.id).toBe("f2");
    expect(m.results).toEqual([]);
    expect(progressPercent(m.state)).toBe(0);
  });

  it("results: append and count completed and failed", () => {
    const m = run(started,
      { type: "results", id: "f1", results: [ping("1", "2"), ping("1", "3", { ok: false, error: "no answer" })] },
      { type: "results", id: "f1", results: [ping("2", "1")] },
    );
    expect(m.results).toHaveLength(3);
    expect(m.state).toMatchObject({ completed: 3, failed: 1, done: false });
    expect(progressPercent(m.state)).toBe(75);
    expect(m.phase).toBe("running");
  });

  it("results of another fan-out are ignored", () => {
    const m = run(started, { type: "results", id: "old", results: [ping("1", "2")] });
    expect(m).toBe(started);
  });

  it("adapter gone: its calls fail, they count as failed, and the fan-out runs on", () => {
    const gone = { ok: false, error: "connection refused", code: "Unavailable", adapter: "adapter-2" };
    const m = run(started,
      { type: "results", id: "f1", results: [ping("1", "2")] },
      { type: "results", id: "f1", results: [ping("2", "1", gone), ping("2", "3", gone)] },
    );
    expect(m.state).toMatchObject({ completed: 3, failed: 2 });
    expect(m.phase).toBe("running");
    expect(m.error).toBeNull();
    const done = run(m, { type: "done", state: fanoutState("f1", 4, undefined, { completed: 4, failed: 2, done: true }) });
    expect(done.results.filter((r) => r.adapter === "adapter-2" && !r.ok)).toHaveLength(2);
  });

  it("done: the server's final state wins and the results stay", () => {
    const m = run(started,
      { type: "results", id: "f1", results: [ping("1", "2")] },
      { type: "done", state: fanoutState("f1", 4, undefined, { completed: 4, failed: 0, done: true, elapsedMs: 30 }) },
    );
    expect(m.phase).toBe("finished");
    expect(m.state).toMatchObject({ completed: 4, done: true, elapsedMs: 30 });
    expect(m.results).toHaveLength(1);
    expect(isBusy(m)).toBe(false);
    expect(progressPercent(m.state)).toBe(100);
  });

  it("done of another fan-out is ignored", () => {
    const m = run(started, { type: "done", state: fanoutState("old", 4, undefined, { done: true }) });
    expect(m).toBe(started);
  });

  it("cancel: marked until the server says done, canceled", () => {
    const m = run(started, { type: "cancel" });
    expect(m.canceling).toBe(true);
    expect(m.phase).toBe("running");
    const done = run(m, { type: "done", state: fanoutState("f1", 4, undefined, { completed: 1, done: true, canceled: true }) });
    expect(done.canceling).toBe(false);
    expect(done.phase).toBe("finished");
    expect(done.state?.canceled).toBe(true);
  });

  it("cancel of no running fan-out changes nothing", () => {
    expect(run(initialFanout, { type: "cancel" })).toBe(initialFanout);
  });

  it("error while starting: shown, and the page is back where it was", () => {
    const first = run(initialFanout, { type: "start" }, { type: "error", message: "hosts: no adapters answered" });
    expect(first).toMatchObject({ phase: "idle", error: "hosts: no adapters answered", state: null });
    const finished = run(started, { type: "done", state: fanoutState("f1", 4, undefined, { done: true }) });
    const again = run(finished, { type: "start" }, { type: "error", message: "refused" });
    expect(again.phase).toBe("finished");
    expect(again.state?.id).toBe("f1");
  });

  it("error while running (a refused cancel): shown, and the fan-out runs on", () => {
    const m = run(started, { type: "cancel" }, { type: "error", message: "fan-out expired" });
    expect(m).toMatchObject({ phase: "running", error: "fan-out expired", canceling: false });
  });

  it("lost: the stream is gone, so the fan-out is over for the page", () => {
    const m = run(started, { type: "lost", message: "lost the fan-out's event stream" });
    expect(m.phase).toBe("finished");
    expect(m.error).toBe("lost the fan-out's event stream");
    expect(isBusy(m)).toBe(false);
    expect(run(initialFanout, { type: "lost", message: "x" })).toBe(initialFanout);
  });

  it("keeps DNS results, whose kind says what they carry", () => {
    const m = run(initialFanout,
      { type: "start" },
      { type: "started", state: fanoutState("d1", 1, { kind: "dns", dnsName: "example.com" }) },
      { type: "results", id: "d1", results: [dns("1", "example.com", { ok: false, rcode: "NXDOMAIN", error: "rcode NXDOMAIN" })] },
    );
    const r = m.results[0];
    expect(r.kind === "dns" && r.rcode).toBe("NXDOMAIN");
    expect(m.state?.failed).toBe(1);
  });
});

describe("progressPercent", () => {
  it.each([
    ["no fan-out", null, 0],
    ["empty and running", fanoutState("a", 0), 0],
    ["empty and done", fanoutState("a", 0, undefined, { done: true }), 100],
    ["a third", fanoutState("a", 3, undefined, { completed: 1 }), 33],
  ] as const)("%s", (_, st, want) => {
    expect(progressPercent(st)).toBe(want);
  });
});
