// Who a netcheck's figures are about, from the adapter's NetcheckResponse
// (protojson): the pod and its node for a tailscale-cni pod, and where the
// figures come from.

interface NetcheckWhoFields {
  source?: string;
  podNamespace?: string;
  podName?: string;
  self?: { hostname?: string; tailscaleIps?: string[] } | null;
}

// netcheckWho is one line saying whose view a netcheck shows; null when the
// response names nobody (an adapter older than these fields).
export function netcheckWho(data: unknown): string | null {
  if (!data || typeof data !== "object") return null;
  const r = data as NetcheckWhoFields;
  const parts: string[] = [];
  if (r.podNamespace && r.podName) parts.push(`pod ${r.podNamespace}/${r.podName}`);
  const host = r.self?.hostname;
  if (host) {
    const ip = r.self?.tailscaleIps?.[0];
    parts.push(`node ${host}${ip ? ` (${ip})` : ""}`);
  }
  switch (r.source) {
    case "NETCHECK_SOURCE_TARGET":
      parts.push("its own last netcheck");
      break;
    case "NETCHECK_SOURCE_ADAPTER":
      parts.push("probed from the adapter's network namespace");
      break;
  }
  return parts.length ? parts.join(" · ") : null;
}
