import { useCallback, useEffect, useReducer, useRef } from "react";
import type { FanoutRequest, FanoutState } from "./api";
import { cancelFanout, followFanout, startFanout } from "./api";
import type { FanoutModel } from "./fanout";
import { fanoutReducer, initialFanout } from "./fanout";

export interface Fanout extends FanoutModel {
  // start starts req, following its results; it resolves to the server's
  // state, or null when the server refused (the model's error says why).
  start: (req: FanoutRequest) => Promise<FanoutState | null>;
  cancel: () => Promise<void>;
  // fail shows why a fan-out could not even be asked for.
  fail: (message: string) => void;
}

// useFanout runs one fan-out at a time through the API and keeps its state
// in fanoutReducer. onDone is called when a fan-out finishes.
export function useFanout(onDone?: (st: FanoutState) => void): Fanout {
  const [model, dispatch] = useReducer(fanoutReducer, initialFanout);
  const stopStream = useRef<(() => void) | null>(null);
  const done = useRef(onDone);
  useEffect(() => {
    done.current = onDone;
  }, [onDone]);
  useEffect(() => () => stopStream.current?.(), []);

  const start = useCallback(async (req: FanoutRequest) => {
    stopStream.current?.();
    stopStream.current = null;
    dispatch({ type: "start" });
    let st: FanoutState;
    try {
      st = await startFanout(req);
    } catch (e) {
      dispatch({ type: "error", message: (e as Error).message });
      return null;
    }
    dispatch({ type: "started", state: st });
    stopStream.current = followFanout(st.id, {
      results: (results) => dispatch({ type: "results", id: st.id, results }),
      done: (final) => {
        dispatch({ type: "done", state: final });
        done.current?.(final);
      },
      error: (message) => dispatch({ type: "lost", message }),
    });
    return st;
  }, []);

  const id = model.state?.id;
  const cancel = useCallback(async () => {
    if (!id) return;
    dispatch({ type: "cancel" });
    try {
      await cancelFanout(id);
    } catch (e) {
      dispatch({ type: "error", message: (e as Error).message });
    }
  }, [id]);

  const fail = useCallback((message: string) => dispatch({ type: "error", message }), []);
  return { ...model, start, cancel, fail };
}
