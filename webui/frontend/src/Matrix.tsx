// The latency heatmap of the last ping fan-out.
import { memo } from "react";
import type { Matrix } from "./matrix";
import { cellKey } from "./matrix";

export const MatrixView = memo(function MatrixView({ m }: { m: Matrix }) {
  if (m.rows.length === 0) {
    return <p className="muted" data-testid="matrix-empty">No ping results yet: press “Ping all”.</p>;
  }
  return (
    <div className="matrix-wrap">
      <p className="muted">
        Rows ping columns. Latency {m.min.toFixed(1)}–{m.max.toFixed(1)} ms; red ✕ failed (hover for why).
      </p>
      <table className="matrix" data-testid="matrix">
        <thead>
          <tr>
            <th />
            {m.cols.map((c) => (
              <th key={c.id} className="col" title={c.id}>
                <span>{c.name}</span>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {m.rows.map((r) => (
            <tr key={r.id}>
              <th className="row" title={r.id}>{r.name}</th>
              {m.cols.map((c) => {
                const cell = m.cells.get(cellKey(r.id, c.id));
                if (!cell) return <td key={c.id} className="none" />;
                const res = cell.result;
                const title = res.ok
                  ? `${r.name} → ${c.name}: ${res.latencyMs} ms via ${res.path || "?"}${res.endpoint ? " " + res.endpoint : ""}${res.derpRegion ? " DERP " + res.derpRegion : ""}`
                  : `${r.name} → ${c.name}: ${res.error}`;
                return (
                  <td key={c.id} className={res.ok ? "ok" : "fail"} style={{ background: cell.color }} title={title}>
                    {cell.text}
                  </td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
});
