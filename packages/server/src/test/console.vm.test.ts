/**
 * The web console and shell-ws on real VMs. Without a browser: shell-ws with an X-Api-Key header runs a
 * command and closes 1000 when the shell exits, and another tenant's sandbox is a 404 before the upgrade.
 * With Debian's Chromium driven by playwright-core (never a downloaded browser): sign in, create from the
 * form, terminal, resize, upload/download byte-exact, pause, resume, destroy; a wrong key is refused.
 * Screenshots land in docs/console/.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type Browser, type Page, chromium } from "playwright-core";
import WebSocket from "ws";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, call, cleanup, newUser } from "./helpers.js";

const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "docs", "console");
const T = 120_000;

let s: ServerProc;
before(async () => {
  s = await startEngineServer();
});
after(async () => {
  if (s) {
    await destroyAll(s, [s.adminKey]);
    await s.stop();
    cleanup(s.dataDir);
  }
});

/** Status of a shell-ws attempt that the server refused before any handshake. */
function refusedStatus(url: string, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { "x-api-key": key } });
    ws.on("open", () => reject(new Error("upgraded")));
    ws.on("unexpected-response", (_q, res) => resolve(res.statusCode ?? 0));
    ws.on("error", reject);
  });
}

describe("shell-ws without a browser", () => {
  it(
    "runs a command, closes 1000 when the shell exits; another tenant gets 404",
    { timeout: T },
    async () => {
      const made = await call(s.url, "POST", "/v1/sandboxes", {
        key: s.adminKey,
        body: { shape: "s-1vcpu-256mb" },
      });
      assert.equal(made.status, 200, made.text);
      const id = made.json.data.id as string;
      const url = `ws://127.0.0.1:${s.port}/v1/sandboxes/${id}/shell-ws`;
      const other = await newUser(s.dataDir, "other-tenant");
      assert.equal(await refusedStatus(url, other), 404);

      const ws = new WebSocket(url, { headers: { "x-api-key": s.adminKey } });
      let out = "";
      const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
      ws.on("message", (d: Buffer, binary) => {
        if (binary) out += d.toString();
      });
      await new Promise((r, j) => {
        ws.on("open", r);
        ws.on("error", j);
      });
      ws.send(JSON.stringify({ type: "resize", rows: 33, cols: 101 }));
      ws.send(Buffer.from("stty size; echo ws-$((6*7)); exit 3\n"));
      assert.equal(await closed, 1000);
      assert.match(out, /33 101/);
      assert.match(out, /ws-42/);
      assert.equal((await call(s.url, "DELETE", `/v1/sandboxes/${id}`, { key: s.adminKey })).status, 200);
    },
  );
});

/** The terminal's visible text, one line per row. */
const screen = (page: Page) => page.locator(".xterm-rows").innerText();

/** Polls the terminal until `re` matches its text; returns the match. */
async function waitScreen(page: Page, re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  const t0 = Date.now();
  for (;;) {
    const text = await screen(page);
    const m = re.exec(text);
    if (m) return m;
    if (Date.now() - t0 > timeoutMs) throw new Error(`terminal never showed ${re}:\n${text}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function typeLine(page: Page, line: string): Promise<void> {
  await page.locator(".xterm-helper-textarea").focus();
  await page.keyboard.type(line);
  await page.keyboard.press("Enter");
}

/** Runs `stty size` and reads the answer printed after a marker. */
async function sttySize(page: Page, tag: string): Promise<string> {
  await typeLine(page, `echo ${tag}-$(stty size | tr ' ' x)`);
  return (await waitScreen(page, new RegExp(`^${tag}-(\\d+x\\d+)`, "m")))[1]!;
}

describe("the console in Chromium", () => {
  let browser: Browser;
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  });
  after(async () => {
    await browser?.close();
  });

  it("refuses a wrong key in the server's words", { timeout: T }, async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${s.url}/console`);
    await page.getByLabel("API key").fill("skp_wrong-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "Sign-in refused: " }).waitFor();
    assert.match(await page.getByRole("alert").innerText(), /invalid api key/);
    await page.screenshot({ path: join(SHOTS, "signin-refused.png") });
    await page.close();
  });

  it("create, terminal, resize, files, pause, resume, destroy", { timeout: 10 * 60_000 }, async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const problems: string[] = [];
    page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
    page.on("pageerror", (e) => problems.push(String(e)));
    await page.goto(`${s.url}/console`);
    await page.getByLabel("API key").fill(s.adminKey);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("link", { name: "Create" }).click();
    await page.getByLabel("Shape").selectOption("s-1vcpu-256mb");
    await page.getByLabel("Name (optional)").fill("console-e2e");
    await page.getByLabel("Envs (KEY=value, one a line)").fill("GREETING=hello");
    await page.screenshot({ path: join(SHOTS, "create.png") });
    await page.getByRole("button", { name: "Create" }).click();
    await page.locator("h1", { hasText: "console-e2e" }).waitFor({ timeout: T });
    await page.locator(".bar .status", { hasText: "running" }).waitFor({ timeout: T });
    await page.screenshot({ path: join(SHOTS, "detail.png") });
    const id = decodeURIComponent(/#\/sb\/([^/]+)/.exec(page.url())![1]!);
    const made = await call(s.url, "GET", `/v1/sandboxes/${id}`, { key: s.adminKey });
    assert.equal(made.json.data.status, "running");
    assert.deepEqual(made.json.data.envs, ["GREETING"]);

    await page.getByRole("link", { name: "terminal" }).click();
    await page.getByTestId("term-state").filter({ hasText: "connected" }).waitFor({ timeout: 30_000 });
    await typeLine(page, "echo hi");
    await waitScreen(page, /^hi\s*$/m);
    const before = await sttySize(page, "one");
    await page.setViewportSize({ width: 900, height: 600 });
    let afterSize = before;
    for (let i = 0; i < 10 && afterSize === before; i++) afterSize = await sttySize(page, `two${i}`);
    assert.notEqual(afterSize, before, `stty size stayed ${before}`);
    await page.screenshot({ path: join(SHOTS, "terminal.png") });
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.getByRole("link", { name: "files" }).click();
    const bytes = randomBytes(300 * 1024);
    await page.locator('input[type="file"]').setInputFiles({
      name: "upload.bin",
      mimeType: "application/octet-stream",
      buffer: bytes,
    });
    const row = page.locator('tr[data-name="upload.bin"]');
    await row.waitFor({ timeout: 60_000 });
    await page.screenshot({ path: join(SHOTS, "files.png") });
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      row.getByRole("button", { name: "Download" }).click(),
    ]);
    const got = readFileSync(await download.path());
    assert.ok(got.equals(bytes), `downloaded ${got.length} bytes, uploaded ${bytes.length}`);

    await page.getByRole("link", { name: "overview" }).click();
    await page.getByRole("button", { name: "Pause" }).click();
    await page.locator(".bar .status", { hasText: "paused" }).waitFor({ timeout: T });
    await page.getByRole("button", { name: "Resume" }).click();
    await page.locator(".bar .status", { hasText: "running" }).waitFor({ timeout: T });

    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.locator("tr", { hasText: "console-e2e" }).waitFor();
    await page.screenshot({ path: join(SHOTS, "list.png") });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(SHOTS, "list-phone.png") });
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.getByRole("link", { name: "console-e2e" }).click();
    await page.getByRole("button", { name: "Destroy…" }).click();
    await page.getByRole("button", { name: "Yes, destroy" }).click();
    await page.locator("h1", { hasText: "Sandboxes" }).waitFor();
    const gone = await call(s.url, "GET", `/v1/sandboxes/${id}`, { key: s.adminKey });
    assert.ok(
      gone.status === 404 || ["destroying", "destroyed"].includes(gone.json.data.status),
      `after destroy: ${gone.text}`,
    );
    assert.deepEqual(problems, []);
    await page.close();
  });
});
