// The WebUI's pages: the tailnet graph, and the Access page.
import { App } from "./App";
import { AccessPage } from "./Access";
import { Boundary } from "./Boundary";
import { Nav, usePage } from "./Nav";

export function Root() {
  const page = usePage();
  if (page === "graph") return <App nav={<Nav page={page} />} />;
  return (
    <div className="app">
      <header>
        <h1>TSymbiote</h1>
        <Nav page={page} />
      </header>
      <Boundary name="access">
        <AccessPage />
      </Boundary>
    </div>
  );
}
