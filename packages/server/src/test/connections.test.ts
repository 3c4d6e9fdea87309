/**
 * Connection and admission limits against the real listening program (no engine): header deadline under
 * 1,000 half-sent requests, JSON body deadline, per-address connection cap, failed-authentication limit
 * per address, per-tenant rate limit across keys, /readyz without host details, the metrics listener.
 */
import assert from "node:assert/strict";
import { type IncomingHttpHeaders, request } from "node:http";
import { type Socket, connect } from "node:net";
import { after, describe, it } from "node:test";
import { type ServerProc, call, cleanup, newUser, startProc } from "./helpers.js";

interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection from `localAddress` (any 127.x.y.z is ours on Linux). */
function get(port: number, path: string, localAddress: string, headers: Record<string, string> = {}) {
  return new Promise<Got>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, localAddress, headers, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** A raw socket from `localAddress` that has sent `text`; resolves once connected. */
function rawSocket(port: number, text: string, localAddress = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: "127.0.0.1", localAddress }, () => {
      s.write(text);
      resolve(s);
    });
    s.once("error", reject);
  });
}

const servers: ServerProc[] = [];
async function server(env: Record<string, string>, adminKey?: string, dataDir?: string) {
  const s = await startProc({ env, ...(adminKey ? { adminKey } : {}), ...(dataDir ? { dataDir } : {}) });
  servers.push(s);
  return s;
}
after(async () => {
  for (const s of servers) await s.stop();
  for (const d of new Set(servers.map((s) => s.dataDir))) cleanup(d);
});

describe("connections", () => {
  it("1,000 half-sent requests are dropped by the header timeout while normal requests are served", async () => {
    const s = await server({
      CREATEOS_SANDBOX_HEADERS_TIMEOUT_MS: "1500",
      CREATEOS_SANDBOX_MAX_CONNECTIONS_PER_IP: "5000",
    });
    const t0 = performance.now();
    const half: Socket[] = [];
    const answers: string[] = [];
    const closedAt: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const sock = await rawSocket(s.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
      let got = "";
      sock.on("data", (d) => {
        got += d.toString("latin1");
      });
      sock.on("error", () => undefined);
      sock.on("close", () => {
        answers.push(got);
        closedAt.push(performance.now() - t0);
      });
      half.push(sock);
    }
    const opened = performance.now() - t0;
    // Normal requests keep being answered while the 1,000 hang.
    const lat: number[] = [];
    while (closedAt.length < 1000 && performance.now() - t0 < 20_000) {
      const a = performance.now();
      const r = await call(s.url, "GET", "/healthz");
      assert.equal(r.status, 200);
      lat.push(performance.now() - a);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(closedAt.length, 1000, "every half-sent connection was closed by the server");
    assert.ok(lat.length >= 10, `normal requests were served meanwhile (${lat.length})`);
    // Each was answered 408 in the catalog's words before being closed.
    const timedOut = answers.filter((a) => /^HTTP\/1.1 408 /.test(a) && /not received in time/.test(a));
    assert.equal(
      timedOut.length,
      1000,
      answers.find((a) => !/408/.test(a)),
    );
    // Not before its deadline, and not long after it (the sweep runs every 375 ms here).
    const last = Math.max(...closedAt);
    assert.ok(Math.min(...closedAt) >= 1400, `closed at ${Math.min(...closedAt)} ms`);
    assert.ok(last < opened + 1500 + 3000, `last closed at ${last} ms (opened by ${opened} ms)`);
    lat.sort((a, b) => a - b);
    const p99 = lat[Math.floor(lat.length * 0.99)]!;
    console.log(
      `half-sent: 1000 opened in ${opened.toFixed(0)} ms, closed by ${last.toFixed(0)} ms; ${lat.length} normal requests, p50 ${lat[lat.length >> 1]!.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`,
    );
    for (const h of half) h.destroy();
  });

  it("a JSON body that does not arrive in time → 408, connection closed", async () => {
    const s = await server({ CREATEOS_SANDBOX_JSON_BODY_TIMEOUT_MS: "500" });
    const sock = await rawSocket(
      s.port,
      `POST /v1/networks HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":`,
    );
    const got = await new Promise<string>((resolve) => {
      let out = "";
      sock.on("data", (d) => {
        out += d;
      });
      sock.on("close", () => resolve(out));
    });
    assert.match(got, /^HTTP\/1.1 408 /);
    assert.match(got, /connection: close/i);
    assert.match(got, /"request":"the request was not received in time"/);
  });

  it("a body refused unread (413, 401) still reaches the client: the close lingers, bounded", async () => {
    const s = await server({});
    // What the SDK does: fetch with the whole body. Closing at once with the body still arriving makes
    // the kernel answer it with a reset, which can wipe the refusal from the client's receive buffer.
    const big = JSON.stringify({ name: "x".repeat(8 * 1024 * 1024) });
    const send = async (key: string) => {
      const r = await fetch(`${s.url}/v1/networks`, {
        method: "POST",
        headers: { "x-api-key": key, "content-type": "application/json" },
        body: big,
      });
      return { status: r.status, body: (await r.json()) as { status: string } };
    };
    for (let round = 0; round < 10; round++) {
      const got = await Promise.all([send(s.adminKey), send(s.adminKey), send("csk_nope"), send(s.adminKey)]);
      assert.deepEqual(
        got.map((g) => [g.status, g.body.status]),
        [
          [413, "fail"],
          [413, "fail"],
          [401, "fail"],
          [413, "fail"],
        ],
      );
    }
    // A client that goes on sending after the answer and the server's FIN (half-open, as a client may be) is
    // read for the linger, then cut: not served forever.
    const t0 = performance.now();
    const sock = connect({ port: s.port, host: "127.0.0.1", allowHalfOpen: true });
    sock.write(
      `POST /v1/networks HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nContent-Type: application/json\r\nContent-Length: ${1 << 30}\r\n\r\n`,
    );
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const pump = setInterval(() => sock.writable && sock.write(chunk), 5);
    const got = await new Promise<string>((resolve) => {
      let out = "";
      sock.on("data", (d) => {
        out += d;
      });
      sock.on("error", () => undefined);
      sock.on("close", () => resolve(out));
    });
    clearInterval(pump);
    assert.match(got, /^HTTP\/1.1 413 /);
    assert.match(got, /connection: close/i);
    const ms = performance.now() - t0;
    assert.ok(ms > 1500 && ms < 6000, `cut after ${ms.toFixed(0)} ms`);
  });

  it("a refused upgrade's socket is closed soon after its answer, whatever the client does", async () => {
    const s = await server({});
    // no key: a 401; the client never closes its side and keeps sending
    const c = connect({ port: s.port, host: "127.0.0.1", allowHalfOpen: true });
    c.on("error", () => undefined);
    let got = "";
    c.on("data", (d: Buffer) => {
      got += d.toString();
    });
    const closed = new Promise<number>((r) => c.once("close", () => r(performance.now())));
    const t0 = performance.now();
    c.write(
      "GET /v1/sandboxes/sb-x/shell-ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    const junk = setInterval(() => c.write(Buffer.alloc(64 * 1024, 0x41)), 50);
    const at = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 8000))]);
    clearInterval(junk);
    c.destroy();
    assert.match(got, /^HTTP\/1.1 401 /);
    assert.ok(
      at > 0 && at - t0 < 5000,
      `closed by the server after ${at < 0 ? "never" : (at - t0).toFixed(0)} ms`,
    );
  });

  it("per-address connection cap: the excess is refused with 429, other addresses are not", async () => {
    const s = await server({ CREATEOS_SANDBOX_MAX_CONNECTIONS_PER_IP: "4" });
    const held = await Promise.all(Array.from({ length: 4 }, () => rawSocket(s.port, "", "127.0.0.2")));
    await new Promise((r) => setTimeout(r, 100));
    const over = await get(s.port, "/healthz", "127.0.0.2");
    assert.equal(over.status, 429);
    assert.equal(over.headers["retry-after"], "1");
    assert.equal(over.headers.connection, "close");
    assert.match(over.body, /too many concurrent connections from this address \(limit 4\)/);
    assert.equal((await get(s.port, "/healthz", "127.0.0.3")).status, 200);
    held[0]!.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(s.port, "/healthz", "127.0.0.2")).status, 200, "a freed slot is usable again");
    for (const h of held) h.destroy();
  });

  it("failed authentication is limited per address: 429 + Retry-After, good keys included; others unaffected", async () => {
    const s = await server({ CREATEOS_SANDBOX_AUTH_FAIL_RPS: "0.2", CREATEOS_SANDBOX_AUTH_FAIL_BURST: "5" });
    const bad = { "x-api-key": "skp_wrongwrongwrongwrongwrongwrongwr" };
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await get(s.port, "/v1/whoami", "127.0.0.4", bad)).status);
    assert.deepEqual(codes, [401, 401, 401, 401, 401]);
    const limited = await get(s.port, "/v1/whoami", "127.0.0.4", bad);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers["retry-after"]) >= 1, String(limited.headers["retry-after"]));
    assert.match(limited.body, /too many failed authentication attempts from this address/);
    const good = { "x-api-key": s.adminKey };
    // A guess must not be told apart by its answer: the blocked address gets 429 for a good key too.
    assert.equal((await get(s.port, "/v1/whoami", "127.0.0.4", good)).status, 429);
    assert.equal((await get(s.port, "/v1/whoami", "127.0.0.5", good)).status, 200);
    assert.equal((await get(s.port, "/v1/whoami", "127.0.0.5", bad)).status, 401);
    // Missing credentials are not guesses and drain nothing.
    for (let i = 0; i < 8; i++) assert.equal((await get(s.port, "/v1/whoami", "127.0.0.6")).status, 401);
    assert.equal((await get(s.port, "/v1/whoami", "127.0.0.6", good)).status, 200);
  });

  it("the API rate limit is per tenant: two keys of one user share one bucket", async () => {
    const env = { CREATEOS_SANDBOX_RATE_LIMIT_RPS: "1", CREATEOS_SANDBOX_RATE_LIMIT_BURST: "4" };
    const first = await server(env);
    await first.stop();
    // A restart with another bootstrap key gives the same admin user a second key.
    const key2 = `skp_second${"y".repeat(26)}`;
    const s = await server(env, key2, first.dataDir);
    const bob = await newUser(s.dataDir, "bob");
    const codes: number[] = [];
    for (const key of [first.adminKey, key2, first.adminKey, key2, first.adminKey, key2])
      codes.push((await call(s.url, "GET", "/v1/whoami", { key })).status);
    assert.deepEqual(codes.slice(0, 4), [200, 200, 200, 200]);
    assert.deepEqual(codes.slice(4), [429, 429]);
    const r = await call(s.url, "GET", "/v1/whoami", { key: key2 });
    assert.match(r.json.data.rate, /requests\/s per tenant/);
    assert.equal((await call(s.url, "GET", "/v1/whoami", { key: bob })).status, 200, "another tenant");
  });
});

describe("what clients see", () => {
  it("/readyz names hosts and reasons without paths or host errors; the log keeps the detail", async () => {
    const sockPath = `/tmp/csb-nohost-${process.pid}.sock`;
    // A host daemon that is not there: the control plane keeps connecting to it (its URL is a path).
    const s2 = await startProc({
      env: { CREATEOS_SANDBOX_HOSTD_TOKEN: "t".repeat(24) },
      args: ["--hostd", `unix:${sockPath}`],
    });
    servers.push(s2);
    let r = await call(s2.url, "GET", "/readyz");
    for (let i = 0; i < 20 && !/connecting/.test(r.json?.data?.reason ?? ""); i++) {
      await new Promise((res) => setTimeout(res, 250));
      r = await call(s2.url, "GET", "/readyz");
    }
    assert.equal(r.status, 503);
    const reason: string = r.json.data.reason;
    assert.equal(reason, "host 1: connecting to the host daemon");
    assert.ok(!reason.includes("/"), reason);
    await s2.waitLog(/"msg":"not ready".*csb-nohost/);
  });

  it("CREATEOS_SANDBOX_METRICS_LISTEN serves /metrics there without a key, and nothing else", async () => {
    const s = await server({ CREATEOS_SANDBOX_METRICS_LISTEN: "127.0.0.1:0" });
    const line = await s.waitLog(/"msg":"metrics listening"/);
    const url = /"url":"([^"]+)"/.exec(line)![1]!;
    const m = await fetch(`${url}/metrics`);
    assert.equal(m.status, 200);
    assert.match(await m.text(), /# TYPE createos_sandboxes gauge/);
    assert.equal((await fetch(`${url}/v1/whoami`)).status, 404);
    assert.equal((await call(s.url, "GET", "/metrics")).status, 401, "the API address still wants a key");
  });
});
