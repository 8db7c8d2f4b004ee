// The fan-out state machine, as a pure reducer: what the page knows about
// the last fan-out (the server's state, the results streamed so far, the
// error to show) and how each event changes it. useFanout drives it with
// the API's calls; the tests drive it by hand.
import type { FanoutState, Result } from "./api";

// Phase is where the fan-out is:
//   idle      none started yet
//   starting  the start request is in flight
//   running   accepted; results are streaming in
//   finished  done, canceled, or its stream was lost
export type Phase = "idle" | "starting" | "running" | "finished";

export interface FanoutModel {
  phase: Phase;
  // The server's state of the fan-out, with completed and failed counted
  // from the streamed results while it runs; null before the first.
  state: FanoutState | null;
  results: Result[];
  error: string | null;
  // A cancel was asked for and the server has not yet said done.
  canceling: boolean;
}

export type FanoutAction =
  // The start request was sent.
  | { type: "start" }
  // The server accepted it: a new fan-out replaces the last one.
  | { type: "started"; state: FanoutState }
  // A batch of results of fan-out id.
  | { type: "results"; id: string; results: Result[] }
  // Fan-out id finished (done or canceled); state is the server's last word.
  | { type: "done"; state: FanoutState }
  // A cancel was asked for.
  | { type: "cancel" }
  // The event stream of the running fan-out is gone for good.
  | { type: "lost"; message: string }
  // A call failed (start refused, cancel refused) or the request was not
  // valid: show why; a running fan-out runs on.
  | { type: "error"; message: string };

export const initialFanout: FanoutModel = { phase: "idle", state: null, results: [], error: null, canceling: false };

export function fanoutReducer(m: FanoutModel, a: FanoutAction): FanoutModel {
  switch (a.type) {
    case "start":
      return { ...m, phase: "starting", error: null };
    case "started":
      return { phase: a.state.done ? "finished" : "running", state: a.state, results: [], error: null, canceling: false };
    case "results": {
      // Results of an earlier fan-out that arrive late are not this one's.
      if (m.state?.id !== a.id || a.results.length === 0) return m;
      const failed = a.results.filter((r) => !r.ok).length;
      return {
        ...m,
        results: m.results.concat(a.results),
        state: { ...m.state, completed: m.state.completed + a.results.length, failed: m.state.failed + failed },
      };
    }
    case "done":
      if (m.state?.id !== a.state.id) return m;
      return { ...m, phase: "finished", state: a.state, canceling: false };
    case "cancel":
      return m.phase === "running" ? { ...m, canceling: true } : m;
    case "lost":
      return m.phase === "running" ? { ...m, phase: "finished", error: a.message, canceling: false } : m;
    case "error":
      return {
        ...m,
        error: a.message,
        canceling: false,
        // A refused start leaves the page where it was.
        phase: m.phase === "starting" ? (m.state ? "finished" : "idle") : m.phase,
      };
  }
}

// isBusy says whether a new fan-out must wait.
export function isBusy(m: FanoutModel): boolean {
  return m.phase === "starting" || m.phase === "running";
}

// progressPercent is how far the fan-out is, 0 to 100.
export function progressPercent(st: FanoutState | null): number {
  if (!st) return 0;
  if (st.total > 0) return Math.floor((100 * st.completed) / st.total);
  return st.done ? 100 : 0;
}
