// The graph's legend: each edge colour, what it means and how many edges
// have it now.
import type { EdgeCategory } from "./graph";
import { EDGE_COLORS, EDGE_LABELS } from "./graph";

export function Legend({ counts }: { counts: Record<EdgeCategory, number> }) {
  return (
    <div className="legend" data-testid="legend">
      {(Object.keys(EDGE_COLORS) as EdgeCategory[]).map((c) => (
        <span key={c} data-category={c}>
          <i style={{ background: EDGE_COLORS[c] }} /> {EDGE_LABELS[c]} <b data-testid={`count-${c}`}>{counts[c]}</b>
        </span>
      ))}
      <span><i className="dot offline" /> offline</span>
    </div>
  );
}
