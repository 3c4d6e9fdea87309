/**
 * One tenant cannot take the control plane down: with real VMs, streamed execs of 4 GiB and a large file
 * download whose clients read nothing for 60 s, plus 200 concurrent buffered execs, keep the server's RSS
 * within a stated bound and another tenant's `GET /v1/sandboxes/:id` p99 within 100 ms; closing the
 * clients ends the commands in the guest. A guest flooding `/run/self` yields a bounded number of events.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { type ClientRequest, type IncomingMessage, request } from "node:http";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { destroyAll, startEngineServer, upgrade } from "./engine-helpers.js";
import { type ServerProc, call, cleanup, newUser } from "./helpers.js";

const SHAPE = "s-1vcpu-256mb";
/** Held stalled this long: the 60 s issue 9 names. */
const STALL_MS = 60_000;
/**
 * RSS bound over the idle baseline. What may be in flight by design: per stalled stream the agent window
 * and socket buffers (well under 4 MiB each), and buffered execs at most the tenant's 256 MiB of claims
 * (the host admits 64 MiB per sandbox, so 4 × 16 MiB here), each held about three times while it is
 * turned into a JSON answer. Without backpressure the issue measured 4 GB within 30 s.
 */
const RSS_BOUND_MIB = 320;

function rssMib(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

/** A request whose response body is never read: the socket's buffers fill and TCP stops the server. */
function stalled(
  port: number,
  method: string,
  path: string,
  key: string,
  body?: unknown,
): Promise<{ req: ClientRequest; res: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent: false,
        headers: { "x-api-key": key, ...(data ? { "content-type": "application/json" } : {}) },
      },
      (res) => {
        res.pause();
        resolve({ req, res });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

/** The probe's program: GET /v1/sandboxes/:id every 25 ms until stdin ends, then the latencies as JSON. */
const PROBE = `
const [url, id, key] = process.argv.slice(1);
const lat = [];
let on = true;
process.stdin.on("data", () => { on = false; });
process.stdin.on("end", () => { on = false; });
while (on) {
  const t0 = performance.now();
  const r = await fetch(url + "/v1/sandboxes/" + id, { headers: { "x-api-key": key } });
  await r.text();
  if (r.status !== 200) { console.error("probe got", r.status); process.exit(2); }
  lat.push(performance.now() - t0);
  await new Promise((res) => setTimeout(res, 25));
}
process.stdout.write(JSON.stringify(lat));
`;

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)]!;

describe("robustness under hostile clients and guests", { timeout: 30 * 60_000 }, () => {
  let s: ServerProc;
  let bobKey: string;
  let a: string;
  let b: string;
  const exec = (id: string, key: string, cmd: string, args: string[]) =>
    call(s.url, "POST", `/v1/sandboxes/${id}/exec`, { key, body: { cmd, args } });
  const create = async (key: string) => {
    const r = await call(s.url, "POST", "/v1/sandboxes", { key, body: { shape: SHAPE } });
    assert.equal(r.status, 200, r.text);
    return r.json.data.id as string;
  };

  /**
   * Bob's reads of his own sandbox, sequential, until `stop()`; returns their latencies. In a process of
   * its own: this one is busy being the load, and its event loop must not count as the server's latency.
   */
  const probe = () => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", PROBE, s.url, b, bobKey], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    let result: Promise<number[]> | undefined;
    return {
      stop: () => {
        result ??= (async () => {
          child.stdin.end("stop\n");
          assert.equal(await exited, 0, "every probe GET answered 200");
          return JSON.parse(out) as number[];
        })();
        return result;
      },
    };
  };

  before(async () => {
    s = await startEngineServer({ CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0" });
    bobKey = await newUser(s.dataDir, "bob");
    a = await create(s.adminKey);
    b = await create(bobKey);
  });

  after(async () => {
    if (s) await destroyAll(s, [s.adminKey, bobKey]);
    await s?.stop();
    if (s) cleanup(s.dataDir);
  });

  it("stalled 4 GiB exec streams, a stalled download and 200 buffered execs: bounded RSS, others served", async () => {
    const pid = s.proc.pid!;
    const pgrep = async () => {
      const r = await exec(a, s.adminKey, "pgrep", ["-c", "-f", "^head -c 4G"]);
      return Number(r.json.data.result.stdout.trim() || "0");
    };
    const big = await exec(a, s.adminKey, "truncate", ["-s", "400M", "/var/tmp/big"]);
    assert.equal(big.json.data.result.exit_code, 0, big.text);
    await new Promise((r) => setTimeout(r, 2000));
    const baseline = rssMib(pid);
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMib(pid));
    }, 200);
    const bob = probe();
    try {
      const streams = await Promise.all(
        [1, 2].map(() =>
          stalled(s.port, "POST", `/v1/sandboxes/${a}/exec`, s.adminKey, {
            cmd: "head",
            args: ["-c", "4G", "/dev/zero"],
            stream: true,
          }),
        ),
      );
      const download = await stalled(s.port, "GET", `/v1/sandboxes/${a}/files?path=/var/tmp/big`, s.adminKey);
      assert.equal(download.res.statusCode, 200);
      assert.equal(download.res.headers["content-length"], String(400 * 1024 * 1024));
      for (const x of streams) assert.equal(x.res.statusCode, 200);

      // 200 buffered execs at once, each retried after Retry-After when a cap refuses it.
      const t0 = performance.now();
      const seen = new Map<number, number>();
      await Promise.all(
        Array.from({ length: 200 }, async () => {
          for (;;) {
            const r = await exec(a, s.adminKey, "sh", ["-c", "yes 0123456789abcdef | head -c 1048576"]);
            seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
            if (r.status === 200) {
              assert.equal(r.json.data.result.stdout.length, 1048576);
              return;
            }
            assert.equal(r.status, 429, r.text);
            assert.ok(Number(r.headers.get("retry-after")) >= 1);
            await new Promise((res) => setTimeout(res, Number(r.headers.get("retry-after")) * 1000));
          }
        }),
      );
      const burstMs = performance.now() - t0;
      const left = STALL_MS - burstMs;
      if (left > 0) await new Promise((r) => setTimeout(r, left));
      assert.equal(await pgrep(), 2, "the stalled commands are still there, held by backpressure");
      const stalledPeak = peak;

      // Closing the clients ends the commands in the guest and releases every stream.
      for (const x of [...streams, download]) x.req.destroy();
      let n = await pgrep();
      for (let i = 0; i < 40 && n > 0; i++) {
        await new Promise((r) => setTimeout(r, 250));
        n = await pgrep();
      }
      assert.equal(n, 0, "closing the clients killed the commands in the guest");
      const m = await call(s.url, "GET", "/metrics", { key: s.adminKey });
      assert.match(m.text, /createos_open_streams 0/);
      const lat = await bob.stop();
      const growth = stalledPeak - baseline;
      console.log(
        `robustness: RSS baseline ${baseline.toFixed(0)} MiB, peak ${stalledPeak.toFixed(0)} MiB (+${growth.toFixed(0)}, bound +${RSS_BOUND_MIB}); ` +
          `200 buffered execs in ${(burstMs / 1000).toFixed(1)} s, answers ${JSON.stringify(Object.fromEntries(seen))}; ` +
          `bob's GET ×${lat.length} p50 ${pct(lat, 0.5).toFixed(1)} ms p99 ${pct(lat, 0.99).toFixed(1)} ms max ${Math.max(...lat).toFixed(0)} ms`,
      );
      assert.ok(growth < RSS_BOUND_MIB, `RSS grew ${growth.toFixed(0)} MiB`);
      assert.ok(pct(lat, 0.99) < 100, `p99 ${pct(lat, 0.99).toFixed(1)} ms`);
    } finally {
      clearInterval(sampler);
      await bob.stop();
    }
  });

  it("shell and tunnel clients that leave while the guest is still opening leave nothing behind", async () => {
    const ptys = async () => {
      const r = await exec(a, s.adminKey, "sh", ["-c", "ls /dev/pts | grep -c '^[0-9]' || true"]);
      return Number(r.json.data.result.stdout.trim());
    };
    const before = await ptys();
    const gone = async (head: string) => {
      const sock = connect(s.port, "127.0.0.1");
      sock.on("error", () => undefined);
      await new Promise<void>((r) => sock.once("connect", () => r()));
      sock.write(`${head}\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nConnection: Upgrade\r\n\r\n`);
      sock.destroy();
    };
    const tcp = "Upgrade: tcp-tunnel\r\nContent-Length: 0";
    const ws =
      "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    const heads = [
      `POST /v1/sandboxes/${a}/shell HTTP/1.1\r\n${tcp}`,
      `POST /v1/sandboxes/${a}/tunnel/1029 HTTP/1.1\r\n${tcp}`,
      `GET /v1/sandboxes/${a}/shell-ws HTTP/1.1\r\n${ws}`,
    ];
    await Promise.all(Array.from({ length: 30 }, (_, i) => gone(heads[i % 3]!)));
    let open = "";
    for (let i = 0; i < 40; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const m = await call(s.url, "GET", "/metrics", { key: s.adminKey });
      open = /createos_open_streams (\d+)/.exec(m.text)?.[1] ?? "";
      if (open === "0" && (await ptys()) === before) break;
    }
    console.log(
      `early leavers: PTYs in the guest before ${before}, after ${await ptys()}; open streams ${open}`,
    );
    assert.equal(open, "0", "no stream is counted open");
    assert.equal(await ptys(), before, "no PTY is left in the guest");
    // The tenant's stream claims were given back too: a shell opens at once, and the count sees it.
    const up = await upgrade(s.port, `/v1/sandboxes/${a}/shell`, s.adminKey);
    assert.equal(up.status, 101);
    assert.equal(await ptys(), before + 1, "an open shell is one PTY in the guest");
    up.sock.destroy();
  });

  it("a guest flooding /run/self: the control plane sees a bounded number of events and stays responsive", async () => {
    const bob = probe();
    const t0 = performance.now();
    // The first park pauses the sandbox; until the VM stops, the guest writes as fast as it can.
    const flood = exec(a, s.adminKey, "sh", ["-c", "yes park flood | head -n 1000000 > /run/self"]);
    flood.catch(() => undefined);
    for (;;) {
      const r = await call(s.url, "GET", `/v1/sandboxes/${a}`, { key: s.adminKey });
      if (r.json.data.status === "paused") break;
      assert.ok(performance.now() - t0 < 120_000, `still ${r.json.data.status}`);
      await new Promise((res) => setTimeout(res, 200));
    }
    const pausedMs = performance.now() - t0;
    const line = await s.waitLog(new RegExp(`guest self-signals coalesced.*${a}`), 10_000);
    const dropped = Number(/"dropped":(\d+)/.exec(line)?.[1]);
    const events = s.logs.filter((l) => l.includes('"msg":"self signal"') && l.includes(a)).length;
    const lat = await bob.stop();
    console.log(
      `self flood: paused after ${(pausedMs / 1000).toFixed(1)} s; events to the control plane ${events}, coalesced away ${dropped}; ` +
        `bob's GET ×${lat.length} p99 ${pct(lat, 0.99).toFixed(1)} ms`,
    );
    // Burst 3, then one per 2 s (vmm/guest-events.ts), over the time the VM ran.
    assert.ok(events >= 1 && events <= 3 + Math.ceil(pausedMs / 2000), `${events} events`);
    assert.ok(dropped >= 100, `the guest really flooded (${dropped} folded)`);
    assert.ok(pct(lat, 0.99) < 100, `p99 ${pct(lat, 0.99).toFixed(1)} ms`);
  });
});
