import { describe, expect, it } from "vitest";
import type { AccessOverview, AccessRequest, AccessTarget } from "./api";
import { actions, checkRequest, formatLeft, parseDuration, secondsLeft, sections } from "./access";

const req = (over: Partial<AccessRequest>): AccessRequest => ({
  name: "r", target: "prod", requester: "alice@example.com", seconds: 600, phase: "Pending",
  mine: false, canApprove: false, canRevoke: false, ...over,
});

const overview = (requests: AccessRequest[]): AccessOverview => ({
  me: { login: "bob@example.com", allowed: true }, now: "2026-12-01T17:00:00Z", targets: [], requests,
});

describe("sections", () => {
  it("puts each request in one section", () => {
    const s = sections(overview([
      req({ name: "p", canApprove: true }),
      req({ name: "m", mine: true, canRevoke: true }),
      req({ name: "a1", phase: "Active", secondsLeft: 300 }),
      req({ name: "a2", phase: "Active", secondsLeft: 30, mine: true }),
      req({ name: "ap", phase: "Approved" }),
      req({ name: "d", phase: "Denied" }),
      req({ name: "x", phase: "Expired" }),
      req({ name: "o", phase: "Pending" }), // someone else's, not mine to decide
    ]));
    expect(s.pending.map((r) => r.name)).toEqual(["p"]);
    expect(s.mine.map((r) => r.name)).toEqual(["m", "o"]);
    expect(s.active.map((r) => r.name)).toEqual(["ap", "a2", "a1"]);
    expect(s.history.map((r) => r.name)).toEqual(["d", "x"]);
  });
});

describe("actions", () => {
  it("offers only what the server allows, in a phase that allows it", () => {
    expect(actions(req({ canApprove: true, canRevoke: true }))).toEqual(["approve", "deny", "revoke"]);
    expect(actions(req({}))).toEqual([]);
    expect(actions(req({ phase: "Active", canApprove: true, canRevoke: true }))).toEqual(["revoke"]);
    expect(actions(req({ phase: "Revoked", canRevoke: true }))).toEqual([]);
    expect(actions(req({ phase: "Denied", canApprove: true }))).toEqual([]);
  });
});

describe("secondsLeft", () => {
  it("counts down from the server's figure by the client's elapsed time", () => {
    const r = req({ phase: "Active", secondsLeft: 90 });
    expect(secondsLeft(r, 1000, 1000)).toBe(90);
    expect(secondsLeft(r, 1000, 31_999)).toBe(60);
    expect(secondsLeft(r, 1000, 1000 + 200_000)).toBe(0);
    expect(secondsLeft(req({ phase: "Pending", secondsLeft: 90 }), 0, 0)).toBe(0);
  });
});

describe("formatLeft", () => {
  it.each([
    [0, "0s"], [59, "59s"], [60, "1m 00s"], [245, "4m 05s"], [3600, "1h 00m"], [7380, "2h 03m"], [273600, "3d 4h"], [-5, "0s"],
  ])("%d -> %s", (s, want) => expect(formatLeft(s)).toBe(want));
});

describe("parseDuration", () => {
  it.each([
    ["30", 1800], ["90s", 90], ["15m", 900], ["1h30m", 5400], [" 2H ", 7200], ["1d", 86400],
    ["", null], ["0m", null], ["abc", null], ["1.5h", null], ["-1h", null],
  ])("%j -> %j", (text, want) => expect(parseDuration(text)).toBe(want));
});

describe("checkRequest", () => {
  const t: AccessTarget = { name: "prod", label: "Prod SSH", group: "group:prod", maxSeconds: 3600, reasonRequired: true, canApprove: false };
  it("names what is wrong", () => {
    expect(checkRequest(t, null, "x")).toMatch(/Duration/);
    expect(checkRequest(t, 7200, "x")).toBe("At most 1h 00m for Prod SSH.");
    expect(checkRequest(t, 600, " ")).toBe("Prod SSH requires a reason.");
    expect(checkRequest(t, 600, "incident 42")).toBeNull();
    expect(checkRequest({ ...t, maxSeconds: undefined, reasonRequired: false }, 999999, "")).toBeNull();
  });
});
