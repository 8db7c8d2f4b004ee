// The pages of the WebUI, as #fragments so that the Go server serves one
// page for all of them.
import { useEffect, useState } from "react";

export type Page = "graph" | "access";

export function pageOf(hash: string): Page {
  return hash.replace(/^#\/?/, "") === "access" ? "access" : "graph";
}

export function usePage(): Page {
  const [page, setPage] = useState<Page>(pageOf(window.location.hash));
  useEffect(() => {
    const on = () => setPage(pageOf(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return page;
}

export function Nav({ page }: { page: Page }) {
  return (
    <nav className="nav">
      <a href="#/" className={page === "graph" ? "active" : ""} data-testid="nav-graph">Graph</a>
      <a href="#/access" className={page === "access" ? "active" : ""} data-testid="nav-access">Access</a>
    </nav>
  );
}
