// Search and filters of the graph. Enter in the search box selects the
// first match.
import type { Filters } from "./graph";

interface Props {
  filters: Filters;
  onChange: (f: Filters) => void;
  options: { tags: string[]; oses: string[] };
  onSearchEnter: () => void;
}

export function FilterBar({ filters, onChange, options, onSearchEnter }: Props) {
  return (
    <section className="toolbar">
      <input
        type="search"
        placeholder="Search name, IP, tag"
        value={filters.search}
        onChange={(e) => onChange({ ...filters, search: e.target.value })}
        onKeyDown={(e) => {
          if (e.key === "Enter") onSearchEnter();
        }}
        aria-label="search"
      />
      <label><input type="checkbox" checked={filters.hideOffline} onChange={(e) => onChange({ ...filters, hideOffline: e.target.checked })} /> hide offline</label>
      <select value={filters.tag} onChange={(e) => onChange({ ...filters, tag: e.target.value })} aria-label="tag filter">
        <option value="">any tag</option>
        <option value="(untagged)">untagged</option>
        {options.tags.map((t) => <option key={t}>{t}</option>)}
      </select>
      <select value={filters.os} onChange={(e) => onChange({ ...filters, os: e.target.value })} aria-label="OS filter">
        <option value="">any OS</option>
        {options.oses.map((o) => <option key={o}>{o}</option>)}
      </select>
    </section>
  );
}
