import { useCallback, useEffect, useState } from "react";
import type { Graph } from "./api";
import { fetchGraph } from "./api";

export interface GraphLoad {
  graph: Graph | null;
  error: string | null;
  loading: boolean;
  // load fetches the graph again; refresh asks the server to rediscover
  // its adapters first.
  load: (refresh?: boolean) => Promise<void>;
}

// useGraph loads the tailnet graph once on mount and on every load().
// A failed load keeps the last graph on screen beside the error.
export function useGraph(): GraphLoad {
  const [graph, setGraph] = useState<Graph | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const load = useCallback(async (refresh = false) => {
    setLoading(true);
    try {
      setGraph(await fetchGraph(refresh));
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setLoading(false);
    }
  }, []);
  useEffect(() => {
    load();
  }, [load]);
  return { graph, error, loading, load };
}
