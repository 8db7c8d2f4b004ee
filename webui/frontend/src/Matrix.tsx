// The latency heatmap of the last ping fan-out.
import { memo, useEffect, useRef, useState } from "react";
import type { LiveMatrix } from "./live";
import { rgba } from "./live";
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

// LiveCanvasMatrix draws a big fan-out's matrix as its results stream in:
// only the cells that changed since the last drawing, unless a row, a
// column or the colour scale changed. Redrawing all 62,250 cells of a
// 250-host ping all on every batch kept the page from painting. Cells
// shrink with the matrix (cellSize): the browser copies the whole canvas
// to the screen after each change, and at 10 pixels a cell a 250-host
// matrix is 6.7 megapixels.
export function LiveCanvasMatrix({ live, version }: { live: LiveMatrix; version: number }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const px = cellSize(Math.max(live.rows.length, live.cols.length));
  const [hover, setHover] = useState<string | null>(null);
  const w = LABEL + live.cols.length * px;
  const h = LABEL + live.rows.length * px;
  // The grid's pixels, kept between drawings: a cell is a few pixels
  // written into this buffer, and one putImageData shows the changed
  // rows. fillRect per cell cost the page more than the rest together.
  const grid = useRef<{ img: ImageData; px32: Uint32Array } | null>(null);
  useEffect(() => {
    const ctx = ref.current?.getContext("2d");
    if (!ctx) return;
    const d = live.take();
    const gw = w - LABEL;
    const gh = h - LABEL;
    if (gw <= 0 || gh <= 0) return;
    let y1 = gh;
    let y2 = 0;
    const paint = (keys: Iterable<string>, buf: Uint32Array) => {
      for (const k of keys) {
        const r = live.cells.get(k);
        if (!r) continue;
        const i = live.rowIndex.get(r.hostNode || r.host);
        const j = live.colIndex.get(r.peer ?? "");
        if (i === undefined || j === undefined) continue;
        const v = live.pixel(r);
        const x = j * px;
        const y = i * px;
        for (let dy = 0; dy < px - 1; dy++) buf.fill(v, (y + dy) * gw + x, (y + dy) * gw + x + px - 1);
        y1 = Math.min(y1, y);
        y2 = Math.max(y2, y + px);
      }
    };
    if (d !== "all" && grid.current && grid.current.img.width === gw && grid.current.img.height === gh) {
      paint(d, grid.current.px32);
      if (y2 > y1) ctx.putImageData(grid.current.img, LABEL, LABEL, 0, y1, gw, y2 - y1);
      return;
    }
    ctx.clearRect(0, 0, w, h);
    ctx.font = "9px system-ui, sans-serif";
    ctx.fillStyle = "#333";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    // Names only where a row is tall enough to read one; hover says the rest.
    if (px >= 8) live.rows.forEach((r, i) => ctx.fillText(r.name.slice(0, 16), LABEL - 3, LABEL + i * px + px / 2));
    if (px >= 8) live.cols.forEach((c, j) => {
      ctx.save();
      ctx.translate(LABEL + j * px + px / 2, LABEL - 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(c.name.slice(0, 16), 0, 0);
      ctx.restore();
    });
    // The empty grid: grey cells with white gaps; then every cell.
    const img = ctx.createImageData(gw, gh);
    const buf = new Uint32Array(img.data.buffer);
    buf.fill(rgba("#ffffff"));
    const grey = rgba("#f0f0f0");
    const row = new Uint32Array(gw).fill(grey);
    for (let x = px - 1; x < gw; x += px) row[x] = rgba("#ffffff");
    for (let y = 0; y < gh; y++) if (y % px !== px - 1) buf.set(row, y * gw);
    grid.current = { img, px32: buf };
    paint(live.cells.keys(), buf);
    ctx.putImageData(img, LABEL, LABEL);
  }, [live, version, w, h, px]);
  return (
    <div className="matrix-wrap">
      <p className="muted">
        Rows ping columns. Latency {live.lo.toFixed(1)}–{live.hi.toFixed(1)} ms (green to orange); red failed. Hover a cell.
      </p>
      <p className="hover">{hover ?? "\u00a0"}</p>
      <canvas
        ref={ref}
        width={w}
        height={h}
        data-testid="matrix"
        data-cells={live.cells.size}
        data-ok={live.ok}
        onMouseMove={(e) => {
          const rect = e.currentTarget.getBoundingClientRect();
          const c = Math.floor((e.clientX - rect.left - LABEL) / px);
          const r = Math.floor((e.clientY - rect.top - LABEL) / px);
          const at = c >= 0 && r >= 0 ? live.at(r, c) : null;
          if (!at) return setHover(null);
          const res = at.result;
          setHover(
            !res
              ? `${at.row.name} → ${at.col.name}: not pinged`
              : res.ok
                ? `${at.row.name} → ${at.col.name}: ${res.latencyMs} ms via ${res.path || "?"}${res.endpoint ? " " + res.endpoint : ""}`
                : `${at.row.name} → ${at.col.name}: ${res.error}`,
          );
        }}
        onMouseLeave={() => setHover(null)}
      />
    </div>
  );
}

// cellSize is the side of a cell, in pixels, for a matrix n cells wide:
// 10 up to 100, then smaller down to 4 (1,000 pixels for 250).
export function cellSize(n: number): number {
  return n <= 100 ? 10 : Math.max(4, Math.floor(1000 / n));
}
