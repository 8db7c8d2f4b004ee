import { describe, expect, it } from "vitest";
import { EDGE_COLORS, NO_FILTERS, TAG_ADAPTER, adapterNodes, buildElements, edgeCategory, filterOptions, formatLatency, nodeMatches, resultCategory } from "./graph";
import { edge, graph, mesh, node, ping } from "./fixtures";
import { tailnet } from "./tailnet.fixture";

describe("buildElements", () => {
  it("makes a node per device and an edge per (host, peer)", () => {
    const el = buildElements(mesh(4), [], NO_FILTERS);
    expect(el.nodes).toHaveLength(4);
    expect(el.edges).toHaveLength(12);
    expect(el.counts.idle).toBe(12);
    expect(el.nodes[0].classes).toContain("host");
  });

  it("greys offline nodes and can hide them with their edges", () => {
    const g = graph([node("1"), node("2", { online: false, hosts: [] })], [edge("1", "2")]);
    const el = buildElements(g, [], NO_FILTERS);
    expect(el.nodes.find((n) => n.data.id === "2")!.classes).toContain("offline");
    const hidden = buildElements(g, [], { ...NO_FILTERS, hideOffline: true });
    expect(hidden.nodes.map((n) => n.data.id)).toEqual(["1"]);
    expect(hidden.edges).toHaveLength(0);
  });

  it("filters by tag and OS", () => {
    const g = graph(
      [node("1"), node("2", { tags: ["tag:k8s-pod"] }), node("3", { os: "windows", tags: [] })],
      [edge("1", "2"), edge("1", "3"), edge("2", "3")],
    );
    expect(buildElements(g, [], { ...NO_FILTERS, tag: "tag:k8s-pod" }).nodes.map((n) => n.data.id)).toEqual(["2"]);
    expect(buildElements(g, [], { ...NO_FILTERS, tag: "(untagged)" }).nodes.map((n) => n.data.id)).toEqual(["3"]);
    const linux = buildElements(g, [], { ...NO_FILTERS, os: "linux" });
    expect(linux.nodes.map((n) => n.data.id)).toEqual(["1", "2"]);
    expect(linux.edges.map((e) => e.data.id)).toEqual(["a1|sock->2"]);
    expect(filterOptions(g)).toEqual({ tags: ["tag:k8s-pod", "tag:test"], oses: ["linux", "windows"] });
  });

  it("marks search matches by name, address or tag", () => {
    const g = mesh(3);
    expect(buildElements(g, [], { ...NO_FILTERS, search: "node-2" }).nodes.filter((n) => n.classes.includes("match")).map((n) => n.data.id)).toEqual(["2"]);
    expect(nodeMatches(g.nodes[2], "100.64.0.3")).toBe(true);
    expect(nodeMatches(g.nodes[2], "TAG:TEST")).toBe(true);
    expect(nodeMatches(g.nodes[2], "  ")).toBe(false);
  });

  it("lays the last fan-out's results over the edges", () => {
    const g = mesh(3);
    const results = [
      ping("1", "2", { latencyMs: 1.234 }),
      ping("1", "3", { path: "derp", latencyMs: 40 }),
      ping("2", "1", { ok: false, error: "no reply within 5s", latencyMs: undefined, path: undefined }),
      ping("2", "3", { pingType: "peerapi", path: "direct" }),
      ping("3", "1", { path: "peer-relay" }),
    ];
    const el = buildElements(g, results, NO_FILTERS);
    const by = Object.fromEntries(el.edges.map((e) => [`${e.data.source}>${e.data.target}`, e.data]));
    expect(by["1>2"].category).toBe("direct");
    expect(by["1>2"].label).toBe("1.2 ms");
    expect(by["1>3"].category).toBe("derp");
    expect(by["1>3"].label).toBe("40 ms");
    expect(by["2>1"].category).toBe("failed");
    expect(by["2>1"].label).toBe("failed");
    expect(by["2>3"].category).toBe("peerapi");
    expect(by["3>1"].category).toBe("peer-relay");
    expect(by["3>2"].category).toBe("idle");
    expect(by["2>1"].color).toBe(EDGE_COLORS.failed);
    expect(el.counts).toMatchObject({ direct: 1, derp: 1, failed: 1, peerapi: 1, "peer-relay": 1, idle: 1 });
  });
});

describe("colouring", () => {
  it("uses the status path before any ping", () => {
    expect(edgeCategory(edge("1", "2", { path: "direct" }))).toBe("direct");
    expect(edgeCategory(edge("1", "2", { path: "derp" }))).toBe("derp");
    expect(edgeCategory(edge("1", "2", { path: "weird" }))).toBe("idle");
  });
  it("lets a result win over the status path", () => {
    expect(edgeCategory(edge("1", "2", { path: "direct" }), ping("1", "2", { ok: false }))).toBe("failed");
  });
  it("colours every category distinctly", () => {
    expect(new Set(Object.values(EDGE_COLORS)).size).toBe(Object.keys(EDGE_COLORS).length);
    expect(resultCategory(ping("1", "2", { path: "local" }))).toBe("local");
    expect(resultCategory(ping("1", "2", { path: "" }))).toBe("idle");
  });
  it("formats latency", () => {
    expect(formatLatency(0.42)).toBe("0.4 ms");
    expect(formatLatency(123.6)).toBe("124 ms");
    expect(formatLatency(undefined)).toBe("");
  });
});

describe("scale", () => {
  it("builds 100 fully meshed nodes quickly", () => {
    const g = mesh(100);
    const results = g.edges.map((e) => ping(e.source, e.target));
    const t0 = performance.now();
    const el = buildElements(g, results, NO_FILTERS);
    const ms = performance.now() - t0;
    expect(el.edges).toHaveLength(9900);
    expect(el.counts.direct).toBe(9900);
    console.log(`buildElements, 100 nodes / 9900 edges with results: ${ms.toFixed(1)} ms`);
    expect(ms).toBeLessThan(2000);
  });
});

describe("adapters", () => {
  it("draws each adapter on the host it debugs, not beside it", () => {
    const g = tailnet(4, 2, 0);
    expect(g.nodes).toHaveLength(13);
    expect(adapterNodes(g).get("a-demo-node-1")).toEqual(["n-demo-node-1"]);
    const el = buildElements(g, [], NO_FILTERS);
    expect(el.nodes.map((n) => n.data.name).sort()).toEqual([
      "demo-default-pod-1", "demo-default-pod-2", "demo-node-1", "demo-node-2", "demo-node-3", "demo-node-4", "tsymbiote-webui-demo",
    ]);
    const pod = el.nodes.find((n) => n.data.id === "n-demo-default-pod-1")!;
    expect(pod.data.adapters).toEqual(["tsymbiote-adapter-pod-1"]);
    expect(pod.classes).toContain("debugged");
    // 6 hosts see 12 peers each; the 6 adapters among them are folded.
    expect(el.edges).toHaveLength(36);
    expect(el.folded).toBe(36);
    expect(el.edges.some((e) => e.data.target.startsWith("a-"))).toBe(false);
  });

  it("badges every host of an adapter that serves several", () => {
    const g = tailnet(2, 0, 0);
    // The first adapter also serves the second daemon.
    g.hosts[1] = { ...g.hosts[1], id: "a-demo-node-1|other", adapter: g.hosts[0].adapter };
    expect(adapterNodes(g).get("a-demo-node-1")).toEqual(["n-demo-node-1", "n-demo-node-2"]);
    const el = buildElements(g, [], NO_FILTERS);
    expect(el.nodes.find((n) => n.data.id === "n-demo-node-2")!.data.adapters).toEqual(["tsymbiote-adapter-demo-node-1"]);
    // The second adapter debugs nothing now: it is a node of its own.
    expect(el.nodes.map((n) => n.data.id)).toContain("a-demo-node-2");
  });

  it("finds an adapter by address when its ID is not a node's", () => {
    const g = tailnet(2, 0, 0);
    g.adapters[0].id = "100.64.0.2:3621";
    g.hosts[0].id = "100.64.0.2:3621|sock";
    expect(adapterNodes(g).get("a-demo-node-1")).toEqual(["n-demo-node-1"]);
  });

  it("keeps an adapter a node when its host is filtered out", () => {
    const el = buildElements(tailnet(2, 1, 0), [], { ...NO_FILTERS, tag: TAG_ADAPTER });
    expect(el.nodes.map((n) => n.data.name)).toEqual(["tsymbiote-adapter-demo-node-1", "tsymbiote-adapter-demo-node-2", "tsymbiote-adapter-pod-1"]);
    expect(el.nodes.every((n) => n.data.adapters.length === 0)).toBe(true);
  });

  it("matches a search for an adapter on its host", () => {
    const el = buildElements(tailnet(2, 0, 0), [], { ...NO_FILTERS, search: "adapter-demo-node-2" });
    expect(el.nodes.filter((n) => n.classes.includes("match")).map((n) => n.data.id)).toEqual(["n-demo-node-2"]);
  });

  it("leaves adapters reached outside the tailnet alone", () => {
    const g = mesh(3);
    g.adapters = [{ id: "127.0.0.1:4000", name: "127.0.0.1:4000", addr: "127.0.0.1:4000", online: true, targets: 1 }];
    g.hosts = [{ id: "127.0.0.1:4000|sock", nodeId: "1", name: "node-1", adapter: "127.0.0.1:4000", target: "sock" }];
    expect(adapterNodes(g).size).toBe(0);
    const el = buildElements(g, [], NO_FILTERS);
    expect(el.nodes).toHaveLength(3);
    // Still a badge on every host, named after the adapter.
    expect(el.nodes.map((n) => n.data.adapters)).toEqual([["127.0.0.1:4000"], ["a2"], ["a3"]]);
    expect(el.nodes.every((n) => n.classes.includes("debugged"))).toBe(true);
  });
});
