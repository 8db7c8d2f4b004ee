// End-to-end check of the WebUI in Debian's Chromium, driven by
// playwright-core (no browser download). Run against a live WebUI:
//
//   WEBUI_URL=http://127.0.0.1:3621 EXPECT_NODES=node-00,node-01 HOST_NODE=node-00 OUT_DIR=out node e2e/run.mjs
//
// It loads the page, checks that the graph shows every expected node,
// clicks "Ping all", waits for the progress bar to reach 100%, checks that
// every edge got a colour from a result and that the matrix is full,
// exports JSON (one row per pair) and saves a screenshot in OUT_DIR.
// Exit status 0 means every check passed.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const url = process.env.WEBUI_URL ?? "http://127.0.0.1:3621";
const expect = (process.env.EXPECT_NODES ?? "").split(",").filter(Boolean);
const outDir = process.env.OUT_DIR ?? "test-results";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(outDir, { recursive: true });

const fail = (msg) => {
  throw new Error(msg);
};
const log = (...a) => console.log("e2e:", ...a);

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
let ok = false;
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => m.type() === "error" && pageErrors.push(m.text()));
try {
  const t0 = Date.now();
  await page.goto(url);
  await page.getByTestId("summary").filter({ hasText: /\d+ nodes/ }).waitFor({ timeout: 30000 });
  log("page loaded in", Date.now() - t0, "ms:", await page.getByTestId("summary").textContent());

  await page.waitForFunction(
    (want) => {
      const cy = window.__tsymbioteCy;
      if (!cy) return null;
      // An adapter is drawn as a badge on its host, named in its data.
      const have = cy.nodes().flatMap((n) => [n.data("name"), ...(n.data("adapters") ?? [])]);
      return want.every((w) => have.includes(w)) ? have : null;
    },
    expect,
    { timeout: 30000 },
  ).then((h) => h.jsonValue()).catch(async () => {
    const have = await page.evaluate(() => window.__tsymbioteCy?.nodes().flatMap((n) => [n.data("name"), ...(n.data("adapters") ?? [])]));
    fail(`graph lacks expected nodes: want ${expect.join(",")}, have ${have}`);
  });
  const [nodeCount, edgeCount] = await page.evaluate(() => [window.__tsymbioteCy.nodes().length, window.__tsymbioteCy.edges().length]);
  log(`graph shows ${nodeCount} nodes (${expect.length} expected all present, adapters as badges) and ${edgeCount} edges`);

  // Watch the page's frames while the fan-out streams in: the longest gap
  // between animation frames is how long the page froze.
  await page.evaluate(() => {
    window.__maxFrameGap = 0;
    let last = performance.now();
    const tick = (now) => {
      window.__maxFrameGap = Math.max(window.__maxFrameGap, now - last);
      last = now;
      if (!window.__stopFrames) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  // PROFILE=1 prints where the page spent its CPU during the fan-out.
  let cdp = null;
  if (process.env.PROFILE) {
    cdp = await page.context().newCDPSession(page);
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.start");
  }
  const tClick = Date.now();
  await page.getByTestId("ping-all").click();
  await page.waitForFunction(() => {
    const p = document.querySelector('[data-testid="progress"]');
    const t = document.querySelector('[data-testid="progress-text"]');
    return p && p.getAttribute("aria-valuenow") === "100" && t && /done/.test(t.textContent);
  }, null, { timeout: 120000 });
  const progress = await page.getByTestId("progress-text").textContent();
  const clickToDone = Date.now() - tClick;
  const maxGap = await page.evaluate(() => {
    window.__stopFrames = true;
    return window.__maxFrameGap;
  });
  log(`progress reached 100% ${clickToDone} ms after the click: ${progress}; longest frame gap meanwhile ${maxGap.toFixed(0)} ms`);
  const total = Number(/\/(\d+)/.exec(progress)[1]);
  if (cdp) {
    const { profile } = await cdp.send("Profiler.stop");
    const self = new Map();
    const dt = profile.timeDeltas;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    profile.samples.forEach((id, i) => {
      const n = byId.get(id);
      const k = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
      self.set(k, (self.get(k) ?? 0) + (dt[i] ?? 0) / 1000);
    });
    [...self].sort((a, b) => b[1] - a[1]).slice(0, 25).forEach(([k, ms]) => log(`profile ${ms.toFixed(0)} ms ${k}`));
  }

  // Every edge coloured by a result; none left idle.
  const edges = await page.waitForFunction(() => {
    const cy = window.__tsymbioteCy;
    const es = cy.edges();
    const pinged = es.filter((e) => e.hasClass("pinged")).length;
    return pinged === es.length && es.length > 0 ? { all: es.length, pinged, cats: es.map((e) => e.data("category")) } : null;
  }, null, { timeout: 15000 }).then((h) => h.jsonValue()).catch(() => fail("not every edge was coloured by a ping result"));
  const cats = {};
  for (const c of edges.cats) cats[c] = (cats[c] ?? 0) + 1;
  // Calls to adapters drawn on their hosts colour no drawn edge.
  const folded = Number(await page.getByTestId("graph").getAttribute("data-folded-edges") ?? 0);
  log(`edges coloured: ${edges.pinged}/${edges.all} (and ${folded} to adapters drawn on their hosts)`, JSON.stringify(cats));
  if (edges.all + folded !== total) fail(`edges ${edges.all} + ${folded} folded != calls ${total}`);
  if (cats.idle) fail(`${cats.idle} edges still idle`);

  // The matrix is a table, or a canvas (with the counts as attributes)
  // when large.
  const matrix = page.getByTestId("matrix");
  const isCanvas = await matrix.evaluate((el) => el.tagName === "CANVAS");
  // The canvas redraws on a throttle, so it may lag the graph by a frame
  // or a few hundred ms: wait for its count (failing below if it never
  // gets there).
  if (isCanvas) {
    await page.waitForFunction(
      (want) => Number(document.querySelector('[data-testid="matrix"]')?.getAttribute("data-cells")) === want,
      total, { timeout: 15000 },
    ).catch(() => {});
  }
  const cells = isCanvas
    ? Number(await matrix.getAttribute("data-cells"))
    : await page.locator('[data-testid="matrix"] td.ok, [data-testid="matrix"] td.fail').count();
  const okCells = isCanvas
    ? Number(await matrix.getAttribute("data-ok"))
    : await page.locator('[data-testid="matrix"] td.ok').count();
  log(`matrix (${isCanvas ? "canvas" : "table"}): ${cells} cells filled (${okCells} ok)`);
  if (cells !== total) fail(`matrix has ${cells} cells, want ${total}`);

  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-json").click()]);
  const file = join(outDir, download.suggestedFilename());
  await download.saveAs(file);
  const doc = JSON.parse(readFileSync(file, "utf8"));
  const pairs = new Set(doc.results.map((r) => `${r.hostNode}>${r.peer}`));
  log(`export: ${file}: ${doc.results.length} rows, ${pairs.size} distinct pairs`);
  if (doc.results.length !== total || pairs.size !== total) fail(`export has ${doc.results.length} rows / ${pairs.size} pairs, want ${total}`);

  // Details of a host.
  const host = process.env.HOST_NODE ?? "";
  if (host) {
    await page.getByRole("searchbox", { name: "search" }).fill(host);
    await page.getByRole("searchbox", { name: "search" }).press("Enter");
    await page.getByTestId("details").getByRole("heading", { name: host }).waitFor({ timeout: 10000 });
    await page.locator("pre.json").first().waitFor({ timeout: 15000 });
    log(`details of ${host} shown`);
    await page.getByRole("searchbox", { name: "search" }).fill("");
    await page.getByRole("tab", { name: "Matrix" }).click();
  }

  const shot = join(outDir, "webui.png");
  await page.screenshot({ path: shot, fullPage: true });
  log("screenshot:", shot);
  if (pageErrors.length) fail(`page errors: ${pageErrors.join(" | ")}`);
  ok = true;
} catch (e) {
  await page.screenshot({ path: join(outDir, "failure.png"), fullPage: true }).catch(() => {});
  console.error("e2e: FAIL:", e.message);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
