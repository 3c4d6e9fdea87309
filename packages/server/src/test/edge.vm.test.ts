/**
 * The two edge listeners on a real VM: the ingress proxy (curl to the SDK's previewUrl(), WebSocket, SSE,
 * refusals, wake on request) and the SSH gateway (OpenSSH client: a command, `-L`, `-J` to the guest's
 * sshd, refusals). One devbox:1 sandbox serves every assertion; the published SDK drives the API.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { request } from "node:http";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { CreateosSandboxClient, type Sandbox } from "@nodeops-createos/sandbox";
import WebSocket from "ws";
import { GUEST_SERVERS } from "./edge-guest.js";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, cleanup } from "./helpers.js";

const pexec = promisify(execFile);

/** curl's status code and body; `*.localhost` resolves to loopback in curl itself (no DNS, no /etc/hosts). */
export async function curl(url: string, extra: string[] = []): Promise<{ code: number; body: string }> {
  const { stdout } = await pexec("curl", ["-s", "-m", "90", "-w", "\n%{http_code}", ...extra, url]);
  const at = stdout.lastIndexOf("\n");
  return { code: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) };
}

describe("ingress proxy and SSH gateway on a real VM", { timeout: 30 * 60_000 }, () => {
  let s: ServerProc;
  let client: CreateosSandboxClient;
  let sb: Sandbox;
  let ingressPort = 0;

  before(async () => {
    s = await startEngineServer({
      CREATEOS_SANDBOX_AUTO_PAUSE_MIN_SECONDS: "2",
      CREATEOS_SANDBOX_SCHEDULER_INTERVAL_MS: "500",
      CREATEOS_SANDBOX_INGRESS_RESPONSE_TIMEOUT_MS: "3000",
      CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0",
    });
    ingressPort = Number(
      /"msg":"ingress listening".*"url":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(
        await s.waitLog(/"msg":"ingress listening"/),
      )![1],
    );
    client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
    sb = await client.createSandbox({ shape: "s-1vcpu-256mb", rootfs: "devbox:1", ingress_enabled: true });
    await sb.files.upload("/tmp/edge.py", GUEST_SERVERS);
    await sb.files.upload("/tmp/www/index.html", "hello from the guest\n");
    const bg = (cmd: string) => sb.runCommand("sh", ["-c", `setsid nohup ${cmd} >/dev/null 2>&1 &`]);
    await bg("python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www");
    await bg("python3 /tmp/edge.py");
  });

  after(async () => {
    if (s) await destroyAll(s, [s.adminKey]);
    await s?.stop();
    if (s) cleanup(s.dataDir);
  });

  /** The URL SDK 0.7.1 builds for a guest port. */
  const url = (port: number, path = "/") => `${sb.previewUrl(port)}${path}`;

  async function untilServed(port: number): Promise<{ code: number; body: string }> {
    for (let i = 0; ; i++) {
      const r = await curl(url(port));
      if (r.code !== 502 || i > 100) return r;
      await new Promise((res) => setTimeout(res, 300));
    }
  }

  it("the template has the literal <port>; previewUrl() reaches python3 -m http.server in the guest", async () => {
    const tpl = sb.data.ingress_url_template!;
    assert.equal(tpl, `http://${sb.id.slice(3)}-<port>.localhost:${ingressPort}`);
    assert.equal((await client.getSandbox(sb.id)).data.ingress_url_template, tpl, "in GET as well");
    const r = await untilServed(8000);
    assert.equal(r.code, 200, r.body);
    assert.equal(r.body, "hello from the guest\n");
    // The sb- spelling of the label routes to the same sandbox.
    const alt = await curl(url(8000).replace(`//${sb.id.slice(3)}`, `//${sb.id}`));
    assert.equal(alt.body, "hello from the guest\n");
  });

  it("the guest sees X-Forwarded-For/Proto/Host and the original Host", async () => {
    await untilServed(8001);
    const r = await curl(url(8001, "/headers"), ["-H", "X-Forwarded-For: 203.0.113.9"]);
    assert.equal(r.code, 200);
    const host = new URL(url(8001)).host;
    assert.match(r.body, new RegExp(`^Host: ${host.replace(/\./g, "\\.")}$`, "mi"));
    assert.match(r.body, /^X-Forwarded-For: 203\.0\.113\.9, 127\.0\.0\.1$/m);
    assert.match(r.body, /^X-Forwarded-Proto: http$/m);
    assert.match(r.body, new RegExp(`^X-Forwarded-Host: ${host.replace(/\./g, "\\.")}$`, "m"));
  });

  it("server-sent events arrive one by one, not at the end", async () => {
    const u = new URL(url(8001, "/sse"));
    const arrivals: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      const req = request(
        { host: "127.0.0.1", port: ingressPort, path: u.pathname, headers: { host: u.host } },
        (res) => {
          assert.equal(res.statusCode, 200);
          assert.equal(res.headers["content-type"], "text/event-stream");
          let buf = "";
          res.on("data", (c: Buffer) => {
            buf += c.toString();
            while (buf.includes("\n\n")) {
              arrivals.push(Date.now() - t0);
              buf = buf.slice(buf.indexOf("\n\n") + 2);
            }
          });
          res.on("end", () => resolve());
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(arrivals.length, 3, `events: ${arrivals}`);
    // The guest sleeps 400 ms between events: buffered delivery would bunch them at the end.
    assert.ok(arrivals[2]! - arrivals[0]! >= 600, `arrivals ms: ${arrivals}`);
  });

  it("a WebSocket echo in the guest answers through the proxy, both ways", async () => {
    await untilServed(8001);
    const u = new URL(url(8002));
    const ws = new WebSocket(`ws://127.0.0.1:${ingressPort}/`, { headers: { host: u.host } });
    await new Promise((res, rej) => {
      ws.once("open", res);
      ws.once("error", rej);
    });
    const got: string[] = [];
    const done = new Promise<void>((res) => {
      ws.on("message", (m) => {
        got.push(m.toString());
        if (got.length === 2) res();
      });
    });
    ws.send("one");
    ws.send("x".repeat(300));
    await done;
    assert.deepEqual(got, ["echo: one", `echo: ${"x".repeat(300)}`]);
    ws.close();
  });

  it("plain-words refusals: nothing listening 502, no answer 504, unknown or disabled 404", async () => {
    const none = await curl(url(8999));
    assert.equal(none.code, 502);
    assert.equal(none.body, `nothing is listening on port 8999 in sandbox ${sb.id}\n`);
    const hang = await curl(url(8003));
    assert.equal(hang.code, 504);
    assert.equal(hang.body, `sandbox ${sb.id} did not answer on port 8003 within 3 s\n`);
    const unknown = await curl(url(8000).replace(sb.id.slice(3, 10), "0000000"));
    assert.equal(unknown.code, 404);
    assert.match(unknown.body, /the sandbox does not exist or its ingress is off/);
    await sb.setIngress(false);
    assert.equal(sb.data.ingress_url_template, undefined, "no template while disabled");
    const off = await curl(`http://${sb.id.slice(3)}-8000.localhost:${ingressPort}/`);
    assert.equal(off.code, 404);
    await sb.setIngress(true);
    assert.equal((await curl(url(8000))).code, 200);
  });

  it("requests count as activity; a paused sandbox wakes on a request and serves it", async () => {
    await sb.setAutoPause(2);
    // Requests every 500 ms keep a 2 s idle timeout from firing.
    for (let i = 0; i < 10; i++) {
      assert.equal((await curl(url(8000))).code, 200);
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.equal((await client.getSandbox(sb.id)).data.status, "running");
    await sb.waitUntilPaused({ timeoutMs: 60_000 });
    // Concurrent requests share one resume.
    const t0 = Date.now();
    const [a, b] = await Promise.all([curl(url(8000)), curl(url(8001, "/headers"))]);
    const firstByteMs = Date.now() - t0;
    assert.equal(a.code, 200, a.body);
    assert.equal(a.body, "hello from the guest\n");
    assert.equal(b.code, 200, b.body);
    const wakes = s.logs.filter((l) => l.includes('"msg":"ingress wakes sandbox"') && l.includes(sb.id));
    assert.equal(wakes.length, 1, "one resume for both requests");
    process.stdout.write(`# woken request answered in ${firstByteMs} ms\n`);
    await sb.setAutoPause(null);
    assert.equal((await client.getSandbox(sb.id)).data.status, "running");
  });
});
