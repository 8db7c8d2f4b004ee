// Readability check of the graph in Debian's Chromium, driven by
// playwright-core: after a ping all, no two labels overlap (node names and
// the latencies shown on edges, measured from the boxes cytoscape
// rendered), no label leaves the canvas or is too small to be drawn,
// adapters are badges on their hosts, and the same holds while a host is
// hovered. Run against a live WebUI:
//
//   WEBUI_URL=http://127.0.0.1:3621 NODES=13 EXPECT_DRAWN=7 OUT_DIR=out node e2e/labels.mjs
//
// It prints "overlapping labels at N nodes: K", saves labels-N.png (the
// graph), labels-N-page.png and labels-N-hover.png in OUT_DIR, and exits 0
// when every check passed.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.WEBUI_URL ?? "http://127.0.0.1:3621";
const size = process.env.NODES ?? "?";
const graphNodes = process.env.GRAPH_NODES ?? "";
const drawn = Number(process.env.EXPECT_DRAWN ?? 0);
const badges = Number(process.env.EXPECT_BADGES ?? -1);
const outDir = process.env.OUT_DIR ?? "test-results";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(outDir, { recursive: true });

const log = (...a) => console.log("labels:", ...a);
const problems = [];
const check = (ok, msg) => {
  if (!ok) problems.push(msg);
};

// measure runs in the page: every shown label's rendered box (node names,
// and the edge labels cytoscape draws), and which of them overlap each
// other, overlap another node, or leave the canvas.
function measure() {
  const cy = window.__tsymbioteCy;
  const opts = { includeNodes: false, includeEdges: false, includeLabels: true, includeOverlays: false, includeUnderlays: false, includeOutlines: false };
  const labels = [];
  const bodies = [];
  cy.nodes().forEach((n) => {
    const b = n.renderedBoundingBox(opts);
    if (b.w > 0) labels.push({ id: n.id(), text: n.data("label"), b, owner: n.id(), font: parseFloat(n.pstyle("font-size").strValue) });
    bodies.push({ id: n.id(), b: n.renderedBoundingBox({ includeLabels: false, includeOverlays: false, includeUnderlays: false, includeOutlines: false }) });
  });
  cy.edges(".show-label").forEach((e) => {
    const b = e.renderedBoundingBox(opts);
    if (b.w > 0) labels.push({ id: e.id(), text: e.data("label"), b, owner: "", font: parseFloat(e.pstyle("font-size").strValue) });
  });
  const hit = (a, b) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
  const pairs = [];
  for (let i = 0; i < labels.length; i++) {
    for (let j = i + 1; j < labels.length; j++) {
      if (hit(labels[i].b, labels[j].b)) pairs.push(`${labels[i].text} / ${labels[j].text}`);
    }
  }
  const onNodes = [];
  for (const l of labels) {
    for (const n of bodies) if (n.id !== l.owner && hit(l.b, n.b)) onNodes.push(`${l.text} on ${n.id}`);
  }
  const w = cy.width();
  const h = cy.height();
  const outside = labels.filter((l) => l.b.x1 < 0 || l.b.y1 < 0 || l.b.x2 > w || l.b.y2 > h).map((l) => l.text);
  const zoom = cy.zoom();
  // cytoscape skips a label whose zoomed font is under min-zoomed-font-size.
  const tooSmall = labels.filter((l) => l.font * zoom < 7).length;
  const xs = cy.nodes().map((n) => n.renderedPosition().x);
  const ys = cy.nodes().map((n) => n.renderedPosition().y);
  return {
    nodes: cy.nodes().length,
    nodeLabels: labels.filter((l) => l.owner).length,
    edgeLabels: labels.filter((l) => !l.owner).length,
    edges: cy.edges().length,
    badges: cy.nodes(".debugged").length,
    adapterNodes: cy.nodes().filter((n) => (n.data("node").tags ?? []).includes("tag:tsymbiote-adapter")).length,
    pairs,
    onNodes,
    outside,
    tooSmall,
    zoom,
    canvas: `${Math.round(w)}x${Math.round(h)}`,
    spread: `${Math.round(Math.max(...xs) - Math.min(...xs))}x${Math.round(Math.max(...ys) - Math.min(...ys))}`,
    drawing: (() => {
      const b = cy.nodes().renderedBoundingBox({ includeOverlays: false, includeUnderlays: false, includeOutlines: false });
      return `${Math.round(b.w)}x${Math.round(b.h)}`;
    })(),
  };
}

const report = (what, m) => {
  log(`overlapping labels at ${size} nodes${what}: ${m.pairs.length}`);
  log(`  ${m.nodeLabels} node labels and ${m.edgeLabels} of ${m.edges} edge labels shown; labels on other nodes: ${m.onNodes.length}; outside the canvas: ${m.outside.length}; too small to draw: ${m.tooSmall}`);
  for (const p of [...m.pairs, ...m.onNodes, ...m.outside].slice(0, 10)) log("  ", p);
  check(m.pairs.length === 0, `${m.pairs.length} overlapping label pairs${what}`);
  check(m.onNodes.length === 0, `${m.onNodes.length} labels on other nodes${what}`);
  check(m.outside.length === 0, `${m.outside.length} labels outside the canvas${what}`);
  check(m.tooSmall === 0, `${m.tooSmall} labels too small to draw${what}`);
  check(m.nodeLabels === m.nodes, `${m.nodeLabels} of ${m.nodes} node labels shown${what}`);
};

// settle waits until the graph has drawn its last change (labels are
// fitted on an animation frame after each).
const settle = (page) => page.evaluate(() => new Promise((r) => setTimeout(() => requestAnimationFrame(() => requestAnimationFrame(r)), 300)));

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => m.type() === "error" && pageErrors.push(m.text()));
try {
  await page.goto(url);
  await page.getByTestId("summary").filter({ hasText: /\d+ nodes/ }).waitFor({ timeout: 30000 });
  log("summary:", await page.getByTestId("summary").textContent());
  await page.waitForFunction((n) => window.__tsymbioteCy?.nodes().length === n, drawn, { timeout: 30000 })
    .catch(async () => {
      const have = await page.evaluate(() => window.__tsymbioteCy?.nodes().length);
      throw new Error(`graph draws ${have} nodes, want ${drawn}`);
    });

  await page.getByTestId("ping-all").click();
  await page.waitForFunction(() => /done/.test(document.querySelector('[data-testid="progress-text"]')?.textContent ?? ""), null, { timeout: 120000 });
  // After a ping all the page reloads the graph; let that land too.
  await page.waitForTimeout(1000);
  await settle(page);
  const folded = Number(await page.getByTestId("graph").getAttribute("data-folded-edges"));

  const m = await page.evaluate(measure);
  log(`${m.nodes} nodes drawn${graphNodes ? ` of ${graphNodes} in the graph` : ""}: ${m.badges} hosts carry their adapter as a badge, ${m.adapterNodes} adapters drawn as nodes, ${folded} adapter edges folded; canvas ${m.canvas}, drawing with labels ${m.drawing}, nodes spread over ${m.spread}, zoom ${m.zoom.toFixed(2)}`);
  check(m.adapterNodes === 0, `${m.adapterNodes} adapters drawn as nodes of their own`);
  if (badges >= 0) check(m.badges === badges, `${m.badges} hosts with an adapter badge, want ${badges}`);
  report("", m);
  const shot = join(outDir, `labels-${size}.png`);
  await page.getByTestId("graph").screenshot({ path: shot });
  await page.screenshot({ path: join(outDir, `labels-${size}-page.png`) });
  log("screenshot:", shot);

  // Hover the first host: its edges' labels show (those that fit), the
  // rest fade, and the card names its adapter.
  const target = await page.evaluate(() => {
    const cy = window.__tsymbioteCy;
    const n = cy.nodes(".debugged").sort((a, b) => String(a.data("label")).localeCompare(String(b.data("label"))))[0];
    const r = cy.container().getBoundingClientRect();
    const p = n.renderedPosition();
    return { id: n.id(), label: n.data("label"), adapters: n.data("adapters"), x: r.left + p.x, y: r.top + p.y };
  });
  await page.mouse.move(target.x, target.y);
  await page.getByRole("tooltip").filter({ hasText: target.adapters[0] }).waitFor({ timeout: 5000 })
    .catch(() => problems.push(`hovering ${target.label} shows no card naming ${target.adapters[0]}`));
  await settle(page);
  const hm = await page.evaluate(measure);
  const hl = await page.evaluate(() => window.__tsymbioteCy.edges(".hl").length);
  log(`hovering ${target.label}: ${hl} edges highlighted, card: ${JSON.stringify(await page.getByRole("tooltip").textContent().catch(() => ""))}`);
  check(hl > 0, `hovering ${target.label} highlights no edge`);
  check(hm.edgeLabels > 0, `hovering ${target.label} shows no edge label`);
  report(` while hovering ${target.label}`, hm);
  const hshot = join(outDir, `labels-${size}-hover.png`);
  await page.getByTestId("graph").screenshot({ path: hshot });
  log("screenshot:", hshot);
  if (pageErrors.length) problems.push(`page errors: ${pageErrors.join(" | ")}`);
} catch (e) {
  problems.push(e.message);
  await page.screenshot({ path: join(outDir, `labels-${size}-failure.png`), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
for (const p of problems) console.error("labels: FAIL:", p);
process.exit(problems.length ? 1 : 0);
