// The latency heatmap of the last ping fan-out.
import { memo, useEffect, useRef, useState } from "react";
import type { Matrix } from "./matrix";
import { cellKey } from "./matrix";

// Beyond this many cells the matrix is drawn on a canvas: ten thousand
// table cells cost the browser seconds of layout on every update.
const CANVAS_CELLS = 900;

export const MatrixView = memo(function MatrixView({ m }: { m: Matrix }) {
  if (m.rows.length === 0) {
    return <p className="muted" data-testid="matrix-empty">No ping results yet: press “Ping all”.</p>;
  }
  if (m.rows.length * m.cols.length > CANVAS_CELLS) return <CanvasMatrix m={m} />;
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

const CELL = 10;
const LABEL = 90;

function cellTitle(m: Matrix, r: number, c: number): string | null {
  const row = m.rows[r];
  const col = m.cols[c];
  if (!row || !col) return null;
  const cell = m.cells.get(cellKey(row.id, col.id));
  if (!cell) return `${row.name} → ${col.name}: not pinged`;
  const res = cell.result;
  return res.ok
    ? `${row.name} → ${col.name}: ${res.latencyMs} ms via ${res.path || "?"}${res.endpoint ? " " + res.endpoint : ""}${res.derpRegion ? " DERP " + res.derpRegion : ""}`
    : `${row.name} → ${col.name}: ${res.error}`;
}

function CanvasMatrix({ m }: { m: Matrix }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const [hover, setHover] = useState<string | null>(null);
  const w = LABEL + m.cols.length * CELL;
  const h = LABEL + m.rows.length * CELL;
  let ok = 0;
  for (const c of m.cells.values()) if (c.result.ok) ok++;
  useEffect(() => {
    const cv = ref.current;
    const ctx = cv?.getContext("2d");
    if (!cv || !ctx) return;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "9px system-ui, sans-serif";
    ctx.fillStyle = "#333";
    ctx.textBaseline = "middle";
    m.rows.forEach((r, i) => {
      ctx.textAlign = "right";
      ctx.fillText(r.name.slice(0, 16), LABEL - 3, LABEL + i * CELL + CELL / 2);
    });
    m.cols.forEach((c, j) => {
      ctx.save();
      ctx.translate(LABEL + j * CELL + CELL / 2, LABEL - 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(c.name.slice(0, 16), 0, 0);
      ctx.restore();
    });
    m.rows.forEach((r, i) => {
      m.cols.forEach((c, j) => {
        const cell = m.cells.get(cellKey(r.id, c.id));
        ctx.fillStyle = cell ? cell.color : "#f0f0f0";
        ctx.fillRect(LABEL + j * CELL, LABEL + i * CELL, CELL - 1, CELL - 1);
      });
    });
  }, [m, w, h]);
  return (
    <div className="matrix-wrap">
      <p className="muted">
        Rows ping columns. Latency {m.min.toFixed(1)}–{m.max.toFixed(1)} ms (green to orange); red failed. Hover a cell.
      </p>
      <p className="hover">{hover ?? "\u00a0"}</p>
      <canvas
        ref={ref}
        width={w}
        height={h}
        data-testid="matrix"
        data-cells={m.cells.size}
        data-ok={ok}
        onMouseMove={(e) => {
          const rect = e.currentTarget.getBoundingClientRect();
          const c = Math.floor((e.clientX - rect.left - LABEL) / CELL);
          const r = Math.floor((e.clientY - rect.top - LABEL) / CELL);
          setHover(c >= 0 && r >= 0 ? cellTitle(m, r, c) : null);
        }}
        onMouseLeave={() => setHover(null)}
      />
    </div>
  );
}
