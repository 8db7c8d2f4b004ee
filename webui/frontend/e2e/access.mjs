// The Access page in Debian's Chromium (playwright-core), as two tailnet
// identities: REQUESTER_URL and APPROVER_URL reach the same WebUI through
// localhost ports that two tailnet nodes of different users forward. Run
// by TestBrowserAccess (webui/access_browser_test.go), which sets:
//
//   REQUESTER_URL, APPROVER_URL  the WebUI as each user
//   EVIL_URLS                    pages on other origins (comma-separated)
//   WRITES_URL                   answers the store's count of writes
//   OUT_DIR, CHROMIUM
//
// Exit status 0 means every check passed.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (k) => process.env[k] ?? (() => { throw new Error(`${k} not set`); })();
const requesterURL = env("REQUESTER_URL");
const approverURL = env("APPROVER_URL");
const evilURLs = env("EVIL_URLS").split(",");
const writesURL = env("WRITES_URL");
const outDir = process.env.OUT_DIR ?? "test-results";
mkdirSync(outDir, { recursive: true });
const log = (...a) => console.log("access:", ...a);
const fail = (m) => { throw new Error(m); };
const writes = async () => Number(await (await fetch(writesURL)).text());

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const errors = [];
const newPage = async (name) => {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p = await ctx.newPage();
  p.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  return p;
};
let ok = false;
try {
  // The requester asks.
  const alice = await newPage("requester");
  await alice.goto(requesterURL + "/#/access");
  await alice.getByTestId("access-me").filter({ hasText: "alice@example.com" }).waitFor({ timeout: 30000 });
  await alice.getByTestId("nav-access").waitFor();
  const row = alice.getByTestId("target-prod");
  await row.getByLabel("duration").fill("2m");
  // A reason is required: the button stays off until there is one.
  if (await row.getByTestId("request").isEnabled()) fail("Request enabled without the required reason");
  await row.getByLabel("reason").fill("incident 42");
  await row.getByTestId("request").click();
  const mine = alice.getByTestId("mine").locator("tr[data-phase=Pending]");
  await mine.first().waitFor({ timeout: 10000 });
  const name = (await mine.first().getAttribute("data-testid")).replace(/^request-/, "");
  log("requester asked:", name);
  if (await mine.first().getByTestId("approve").count() > 0) fail("the requester got an Approve button on their own request");

  // The approver sees it.
  const bob = await newPage("approver");
  await bob.goto(approverURL + "/#/access");
  await bob.getByTestId("access-me").filter({ hasText: "bob@example.com" }).waitFor({ timeout: 30000 });
  const pending = bob.getByTestId(`request-${name}`);
  await pending.getByTestId("approve").waitFor({ timeout: 10000 });
  await bob.screenshot({ path: join(outDir, "access-pending.png"), fullPage: true });

  // Other origins try to approve through the approver's browser.
  const target = `${approverURL}/api/access/requests/${encodeURIComponent(name)}/approve`;
  for (const evilURL of evilURLs) {
    const before = await writes();
    const evil = await bob.context().newPage();
    await evil.goto(evilURL);
    const attempts = await evil.evaluate(async (target) => {
      const out = {};
      try {
        const r = await fetch(target, { method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" }, body: "{}" });
        out.noCors = `sent, opaque response (type ${r.type})`;
      } catch (e) { out.noCors = `failed: ${e}`; }
      try {
        const r = await fetch(target, { method: "POST", headers: { "X-Tsymbiote-Csrf": "1", "Content-Type": "application/json" }, body: "{}" });
        out.withHeader = `answered ${r.status}`;
      } catch (e) { out.withHeader = `blocked: ${e.message}`; }
      return out;
    }, target);
    log("no-cors fetch from", evilURL, "->", attempts.noCors);
    log("fetch with the CSRF header from", evilURL, "->", attempts.withHeader);
    if (!attempts.withHeader.startsWith("blocked")) fail(`a cross-origin fetch with the CSRF header got through: ${attempts.withHeader}`);
    // A plain form post: the browser navigates to the answer.
    await evil.evaluate((target) => {
      const f = document.getElementById("f");
      f.action = target;
      f.submit();
    }, target);
    await evil.waitForURL(target, { timeout: 10000 });
    const formAnswer = (await evil.textContent("body")) ?? "";
    log("form POST from", evilURL, "->", formAnswer.trim());
    if (!formAnswer.includes("cross-site request refused")) fail(`the form post was not refused: ${formAnswer}`);
    await evil.screenshot({ path: join(outDir, `access-csrf-${new URL(evilURL).hostname}.png`) });
    await evil.close();
    const after = await writes();
    log(`store writes before the attempts from ${evilURL}: ${before}, after: ${after}`);
    if (after !== before) fail("a cross-site attempt wrote to the store");
  }
  await bob.reload();
  await bob.getByTestId(`request-${name}`).getByTestId("approve").waitFor({ timeout: 10000 });
  if ((await bob.getByTestId(`request-${name}`).getAttribute("data-phase")) !== "Pending") fail("the request is no longer Pending after the cross-site attempts");
  log("request still Pending after the cross-site attempts");

  // The approver approves on the page; the grant appears with its countdown.
  const tApprove = Date.now();
  await bob.getByTestId(`request-${name}`).getByTestId("approve").click();
  const active = bob.getByTestId("active").locator(`tr[data-testid="request-${name}"][data-phase=Active]`);
  await active.waitFor({ timeout: 15000 });
  const left1 = await active.getByTestId("left").textContent();
  log(`approved; Active on the approver's page after ${Date.now() - tApprove} ms, time left ${left1}`);
  if (!/^(1m \d\ds|2m 00s|\d+s)$/.test(left1)) fail(`countdown looks wrong: ${left1}`);
  await bob.waitForTimeout(2100);
  const left2 = await active.getByTestId("left").textContent();
  log(`two seconds later: ${left2}`);
  if (left2 === left1) fail("the countdown does not move");
  await bob.screenshot({ path: join(outDir, "access-active.png"), fullPage: true });

  // The requester sees the grant and revokes it early.
  const aliceActive = alice.getByTestId("active").locator(`tr[data-testid="request-${name}"][data-phase=Active]`);
  await aliceActive.waitFor({ timeout: 10000 });
  await aliceActive.getByTestId("revoke").click();
  await alice.getByTestId("history").locator(`tr[data-testid="request-${name}"][data-phase=Revoked]`).waitFor({ timeout: 10000 });
  if (await alice.getByTestId("active").locator(`tr[data-testid="request-${name}"]`).count() !== 0) fail("the revoked grant is still listed as active");
  await bob.getByTestId("history").locator(`tr[data-testid="request-${name}"][data-phase=Revoked]`).waitFor({ timeout: 10000 });
  log("revoked by the requester: gone from active grants, in the history on both pages");
  await alice.screenshot({ path: join(outDir, "access-revoked.png"), fullPage: true });
  if (errors.length > 0) fail(`page errors: ${errors.join("; ")}`);
  ok = true;
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
