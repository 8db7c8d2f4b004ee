import { describe, expect, it } from "vitest";
import { netcheckWho } from "./netcheck";

describe("netcheckWho", () => {
  it("names the pod, its node and the source", () => {
    expect(
      netcheckWho({
        source: "NETCHECK_SOURCE_TARGET",
        podNamespace: "default",
        podName: "web-1",
        self: { hostname: "k8s-default-web-1", tailscaleIps: ["100.64.0.5", "fd7a:115c:a1e0::5"] },
      }),
    ).toBe("pod default/web-1 · node k8s-default-web-1 (100.64.0.5) · its own last netcheck");
  });
  it("says a sidecar's figures are the adapter's", () => {
    expect(
      netcheckWho({ source: "NETCHECK_SOURCE_ADAPTER", podNamespace: "", podName: "", self: { hostname: "db" } }),
    ).toBe("node db · probed from the adapter's network namespace");
  });
  it("is null for responses naming nobody", () => {
    expect(netcheckWho({ udp: true })).toBeNull();
    expect(netcheckWho(null)).toBeNull();
    expect(netcheckWho("x")).toBeNull();
  });
});
