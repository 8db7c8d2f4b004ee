// The fan-out's progress bar and counts, and why it failed if it did.
import type { FanoutState } from "./api";
import { progressPercent } from "./fanout";

export function Progress({ state, error }: { state: FanoutState | null; error: string | null }) {
  // The row is there before the first fan-out too: its appearing moved
  // the graph's canvas, and a big graph's layout then cost a 200 ms
  // frame right after "Ping all".
  if (!state && !error) {
    return (
      <section className="progress-row">
        <span className="muted">No fan-out yet.</span>
      </section>
    );
  }
  const pct = progressPercent(state);
  return (
    <section className="progress-row">
      {state && (
        <>
          <div className="progress" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct} data-testid="progress">
            <div className="bar" style={{ width: `${pct}%` }} />
          </div>
          <span data-testid="progress-text">
            {state.completed}/{state.total} ({pct}%) · {state.failed} failed
            {state.done ? ` · ${state.canceled ? "canceled" : "done"} in ${(state.elapsedMs / 1000).toFixed(2)} s` : " · running"}
          </span>
        </>
      )}
      {error && <span className="error" role="alert" data-testid="fanout-error">{error}</span>}
    </section>
  );
}
