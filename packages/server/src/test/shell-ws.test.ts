/**
 * shell-ws refusals happen before the WebSocket handshake (an HTTP answer, never a 101), and /console is
 * served with its CSP. No engine: the real program with CREATEOS_SANDBOX_HOSTD=none.
 */
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { parseResize } from "../routes/shell-ws.js";
import { type ServerProc, call, cleanup, startProc } from "./helpers.js";

interface Refusal {
  status: number;
  body: string;
}

/** Opens shell-ws; resolves with the HTTP refusal, rejects if the server upgraded. */
function refusal(url: string, opts: WebSocket.ClientOptions, protocols: string[] = []): Promise<Refusal> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, opts);
    ws.on("open", () => {
      ws.terminate();
      reject(new Error("the server upgraded"));
    });
    ws.on("unexpected-response", (_req, res: IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on("error", (e) => reject(e));
  });
}

const b64url = (s: string) => Buffer.from(s).toString("base64url");
const BEARER = "base64url.bearer.authorization.k8s.io.";

describe("shell-ws before the upgrade, and /console", () => {
  let s: ServerProc;
  let wsUrl: string;
  before(async () => {
    s = await startProc();
    wsUrl = `ws://127.0.0.1:${s.port}/v1/sandboxes/sb-01jzzzzzzzzzzzzzzzzzzzzzzz/shell-ws`;
  });
  after(async () => {
    await s.stop();
    cleanup(s.dataDir);
  });

  it("a missing key is 401 and a wrong one 401, in the catalog's words", async () => {
    const none = await refusal(wsUrl, {});
    assert.equal(none.status, 401);
    assert.match(none.body, /missing api key/);
    const wrong = await refusal(wsUrl, { headers: { "x-api-key": "skp_nope" } });
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /invalid api key/);
    const wrongBearer = await refusal(wsUrl, {}, [
      `${BEARER}${b64url("skp_nope")}`,
      "createos-sandbox.shell.v1",
    ]);
    assert.equal(wrongBearer.status, 401);
  });

  it("a sandbox the caller does not own is 404, by header and by bearer subprotocol", async () => {
    const byHeader = await refusal(wsUrl, { headers: { "x-api-key": s.adminKey } });
    assert.equal(byHeader.status, 404);
    assert.match(byHeader.body, /sandbox sb-01jzzzzzzzzzzzzzzzzzzzzzzz not found/);
    const byBearer = await refusal(wsUrl, {}, [
      `${BEARER}${b64url(s.adminKey)}`,
      "createos-sandbox.shell.v1",
    ]);
    assert.equal(byBearer.status, 404);
  });

  it("a foreign Origin is 403; a plain GET is told it needs a WebSocket", async () => {
    const foreign = await refusal(wsUrl, {
      headers: { "x-api-key": s.adminKey },
      origin: "http://evil.example",
    });
    assert.equal(foreign.status, 403);
    assert.match(foreign.body, /origin http:\/\/evil\.example may not open a terminal/);
    const own = await refusal(wsUrl, {
      headers: { "x-api-key": s.adminKey },
      origin: `http://127.0.0.1:${s.port}`,
    });
    assert.equal(own.status, 404);
    const plain = await call(s.url, "GET", "/v1/sandboxes/sb-01jzzzzzzzzzzzzzzzzzzzzzzz/shell-ws", {
      key: s.adminKey,
    });
    assert.equal(plain.status, 400);
    assert.match(plain.text, /needs a WebSocket handshake/);
  });

  it("serves /console: the page and its assets under a CSP with no inline script", async () => {
    const page = await fetch(`${s.url}/console`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    const csp = page.headers.get("content-security-policy")!;
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /default-src 'none'/);
    const html = await page.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, "no inline script");
    const src = /src="(\/console\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(src, html);
    const js = await fetch(s.url + src);
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type")!, /^text\/javascript/);
    assert.match(js.headers.get("cache-control")!, /immutable/);
    assert.equal((await fetch(`${s.url}/console/`)).status, 200);
    const missing = await fetch(`${s.url}/console/assets/nope.js`);
    assert.equal(missing.status, 404);
    const outside = await fetch(`${s.url}/console/..%2fpackage.json`);
    assert.equal(outside.status, 404);
  });
});

describe("resize messages", () => {
  it("takes rows and cols 1–65535 and nothing else", () => {
    assert.deepEqual(parseResize('{"type":"resize","rows":40,"cols":120}'), { rows: 40, cols: 120 });
    for (const bad of [
      '{"type":"resize","rows":0,"cols":80}',
      '{"type":"x","rows":1,"cols":1}',
      "nope",
      "null",
    ])
      assert.equal(parseResize(bad), undefined, bad);
    assert.equal(parseResize('{"type":"resize","rows":70000,"cols":80}'), undefined);
  });
});
