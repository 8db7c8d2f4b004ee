// How the page holds up during a big "Ping all", in Debian's Chromium
// driven by playwright-core: from the click to the last result on screen,
// and the gaps between animation frames while results stream in. Run
// against a live WebUI (BenchmarkPingAllBrowser starts one over 250 fake
// hosts):
//
//   WEBUI_URL=http://127.0.0.1:3621 NODES=250 THROTTLE=1 node e2e/bench.mjs
//
// THROTTLE is Chromium's CPU slowdown (1: off). It prints one line
// "bench: {json}" with the figures and exits 0, or prints "bench: FAIL:"
// and exits 1 when the page never showed every result. PROFILE=1 adds the
// functions the page spent its CPU in, TRACE=1 what filled each task over
// 100 ms (from a Chromium trace), LOAF=1 each animation frame over
// 100 ms with the scripts that ran in it.
import { chromium } from "playwright-core";

const url = process.env.WEBUI_URL ?? "http://127.0.0.1:3621";
const nodes = Number(process.env.NODES ?? 0);
const throttle = Number(process.env.THROTTLE ?? 1);
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const log = (...a) => console.log("bench:", ...a);

// watch runs in the page from just before the click: it keeps every
// animation frame's timestamp and every long task, and resolves on the
// first frame that shows every result of the fan-out (the progress says
// done and the page reports each result drawn).
function watch() {
  const w = window;
  w.__bench = { frames: [], longTasks: [], click: 0, end: 0 };
  const b = w.__bench;
  new PerformanceObserver((l) => {
    for (const e of l.getEntries()) b.longTasks.push({ start: e.startTime, ms: e.duration });
  }).observe({ type: "longtask" });
  // Long animation frames, with the scripts that ran in them and how
  // long the rendering took (LOAF=1 prints those over 100 ms).
  b.loafs = [];
  try {
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) {
        if (e.duration <= 100) continue;
        b.loafs.push({
          start: Math.round(e.startTime), ms: Math.round(e.duration),
          render: Math.round(e.renderStart ? e.startTime + e.duration - e.renderStart : 0),
          layout: Math.round(e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0),
          scripts: e.scripts.map((x) => `${x.invoker || x.invokerType} ${x.sourceFunctionName || ""} ${Math.round(x.duration)}`),
        });
      }
    }).observe({ type: "long-animation-frame" });
  } catch {
    // An older Chromium: no long-animation-frame entries.
  }
  document.addEventListener("click", (e) => {
    if (e.target.closest?.('[data-testid="ping-all"]')) b.click = e.timeStamp;
  }, { capture: true });
  b.done = new Promise((resolve) => {
    const tick = (now) => {
      b.frames.push(now);
      if (b.click > 0) {
        const t = document.querySelector('[data-testid="progress-text"]')?.textContent ?? "";
        const m = /^(\d+)\/(\d+)/.exec(t);
        const drawn = w.__tsymbioteDrawn?.() ?? -1;
        if (m && /done/.test(t) && m[1] === m[2] && drawn === Number(m[2])) {
          b.end = now;
          b.total = Number(m[2]);
          b.drawn = drawn;
          b.progress = t;
          resolve();
          return;
        }
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}

// figures turns what watch kept into the benchmark's numbers.
function figures() {
  const b = window.__bench;
  const fs = b.frames.filter((t) => t >= b.click && t <= b.end);
  const gaps = [];
  for (let i = 1; i < fs.length; i++) gaps.push(fs[i] - fs[i - 1]);
  // The gap from the click to the first frame counts too.
  if (fs.length > 0) gaps.unshift(fs[0] - b.click);
  // The worst gaps, with when they ended (ms after the click).
  const worst = [];
  for (let i = 0; i < fs.length; i++) worst.push({ at: Math.round(fs[i] - b.click), ms: Math.round(fs[i] - (i ? fs[i - 1] : b.click)) });
  worst.sort((x, y) => y.ms - x.ms);
  gaps.sort((x, y) => x - y);
  const q = (p) => (gaps.length ? gaps[Math.min(gaps.length - 1, Math.floor(p * gaps.length))] : 0);
  const lt = b.longTasks.filter((t) => t.start + t.ms >= b.click && t.start <= b.end);
  return {
    clickToLastMs: b.end - b.click,
    frames: fs.length,
    maxGapMs: gaps.length ? gaps[gaps.length - 1] : 0,
    p50GapMs: q(0.5),
    p95GapMs: q(0.95),
    gapsOver100: gaps.filter((g) => g > 100).length,
    longTasks: lt.length,
    longestTaskMs: lt.reduce((m, t) => Math.max(m, t.ms), 0),
    longTaskMs: lt.reduce((s, t) => s + t.ms, 0),
    results: b.total,
    drawn: b.drawn,
    progress: b.progress,
    worstGaps: worst.slice(0, 5),
    loafs: b.loafs.filter((x) => x.start + x.ms >= b.click && x.start <= b.end).map((x) => ({ ...x, start: Math.round(x.start - b.click) })),
  };
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
let ok = false;
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => m.type() === "error" && pageErrors.push(m.text()));
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction((n) => window.__tsymbioteCy?.nodes().length === n, nodes, { timeout: 120000 });
  // A graph too big to draw every edge says how many it left out.
  const [drawnEdges, edges] = await page.evaluate(() => {
    const d = window.__tsymbioteCy.edges().length;
    return [d, d + Number(document.querySelector('[data-testid="graph"]')?.getAttribute("data-hidden-edges") ?? 0)];
  });
  // Let the first drawing and the label fitting finish.
  await page.evaluate(() => new Promise((r) => setTimeout(() => requestAnimationFrame(() => requestAnimationFrame(r)), 500)));
  log(`graph of ${nodes} nodes and ${edges} edges (${drawnEdges} drawn) on screen ${Date.now() - t0} ms after load started`);

  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: throttle });
  if (process.env.PROFILE) {
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.start");
  }
  await page.evaluate(watch);
  // TRACE=1 records a Chromium trace and prints what filled each task
  // over 100 ms (the events directly inside it, by name).
  if (process.env.TRACE) await browser.startTracing(page, { categories: ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8"] });
  await page.getByTestId("ping-all").click();
  await page.waitForFunction(() => window.__bench.end > 0, null, { timeout: 180000, polling: 250 }).catch(async () => {
    const st = await page.evaluate(() => ({
      progress: document.querySelector('[data-testid="progress-text"]')?.textContent,
      drawn: window.__tsymbioteDrawn?.(),
    }));
    throw new Error(`the page never showed every result: ${JSON.stringify(st)}`);
  });
  const f = await page.evaluate(figures);
  if (process.env.TRACE) {
    const { traceEvents } = JSON.parse((await browser.stopTracing()).toString());
    const main = traceEvents.find((e) => e.name === "thread_name" && e.args?.name === "CrRendererMain");
    const onMain = traceEvents.filter((e) => e.ph === "X" && main && e.pid === main.pid && e.tid === main.tid);
    const tasks = onMain.filter((e) => e.name === "RunTask" && e.dur > 100000).sort((a, b) => b.dur - a.dur).slice(0, 8);
    for (const t of tasks) {
      const inside = new Map();
      for (const e of onMain) {
        if (e === t || e.ts < t.ts || e.ts + (e.dur ?? 0) > t.ts + t.dur || e.name === "RunTask") continue;
        const k = e.name + (e.args?.data?.type ? `:${e.args.data.type}` : "") + (e.args?.data?.functionName ? `:${e.args.data.functionName}` : "");
        inside.set(k, (inside.get(k) ?? 0) + (e.dur ?? 0));
      }
      const top = [...inside].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, us]) => `${k} ${(us / 1000).toFixed(0)}`).join(", ");
      log(`task ${(t.dur / 1000).toFixed(0)} ms: ${top}`);
    }
  }
  if (process.env.DBG) log("dbg " + JSON.stringify(await page.evaluate(() => ({ click: Math.round(window.__bench.click), ro: window.__ro, ap: window.__ap, rn: window.__rn }))));
  if (process.env.LOAF) for (const x of f.loafs) log(`long frame ${JSON.stringify(x)}`);
  delete f.loafs;
  f.throttle = throttle;
  f.edges = edges;
  if (process.env.PROFILE) {
    const { profile } = await cdp.send("Profiler.stop");
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    profile.samples.forEach((id, i) => {
      const n = byId.get(id);
      const k = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
      self.set(k, (self.get(k) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
    });
    [...self].sort((a, b) => b[1] - a[1]).slice(0, 30).forEach(([k, ms]) => log(`profile ${ms.toFixed(0)} ms ${k}`));
  }
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join(" | ")}`);
  console.log("bench: " + JSON.stringify(f));
  ok = true;
} catch (e) {
  console.error("bench: FAIL:", e.message);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
