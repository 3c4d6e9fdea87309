#!/usr/bin/env node
// API throughput and latency of the control plane's read path: GET /v1/sandboxes/:id and the list, on
// loopback, printed as a table.
//
// The real program (`createos-sandbox serve`, packages/server/dist/main.js) runs in its own process with a
// fresh data dir. Sandbox rows are seeded straight into its SQLite database (through the server's own
// store module) so the numbers measure the API — auth, rate limiter, routing, SQLite read, JSON — and not
// VM boots; the engine is not loaded (CREATEOS_SANDBOX_HOSTD=none). The per-key rate limit is raised out of
// the way but stays in the request path.
//
// The load generator is a bounded loop of keep-alive raw-socket HTTP/1.1 clients (one request in flight per
// connection) in this process; on a 2-core machine it shares the CPU with the server, so the numbers are
// a lower bound of what the server alone can do.
//
// Usage: node bench/api/run.js [--duration 10] [--connections 8] [--rows 200]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const DURATION_S = arg("duration", 10);
const CONNECTIONS = arg("connections", 8);
const ROWS = arg("rows", 200);

const { SqliteStore } = await import(join(root, "packages/server/dist/store/sqlite.js"));
const { newSandboxId } = await import(join(root, "packages/server/dist/ulid.js"));

const dataDir = mkdtempSync(join(tmpdir(), "csb-bench-"));
const key = `skp_bench${"x".repeat(28)}`;
const ids = [];
{
  const store = SqliteStore.open(join(dataDir, "db.sqlite"));
  const user = await store.createUser("admin");
  await store.addApiKey(user.id, key);
  const now = new Date().toISOString();
  for (let i = 0; i < ROWS; i++) {
    const id = newSandboxId();
    ids.push(id);
    await store.insertSandbox({
      id,
      user_id: user.id,
      name: `bench-${i}`,
      status: i % 3 === 0 ? "paused" : "running",
      shape: "s-1vcpu-256mb",
      rootfs: "devbox:1",
      vcpu: 1,
      mem_mib: 256,
      disk_mib: 10240,
      region: "local",
      ip: `10.201.${i >> 8}.${i & 255}`,
      spawn_ms: 180.5,
      created_at: now,
      running_at: now,
      ingress_enabled: false,
      egress: ["api.example.com:443"],
      envs: { TOKEN: "secret", MODE: "bench" },
      ssh_pubkeys: [],
      bandwidth_quota_bytes: 5 * 1024 ** 3,
      bandwidth_used_bytes: 0,
      bandwidth_ingress_bytes: 0,
      last_activity_at: Date.now(),
    });
  }
  await store.close();
}

const server = spawn(
  process.execPath,
  [
    ...(process.env.BENCH_SERVER_ARGS ? process.env.BENCH_SERVER_ARGS.split(" ") : []),
    join(root, "packages/server/dist/main.js"),
    "serve",
    "--port",
    "0",
    "--data-dir",
    dataDir,
  ],
  {
    env: {
      ...process.env,
      CREATEOS_SANDBOX_HOSTD: "none",
      CREATEOS_SANDBOX_INGRESS_LISTEN: "off",
      CREATEOS_SANDBOX_SSH_LISTEN: "off",
      CREATEOS_SANDBOX_RATE_LIMIT_RPS: "1000000000",
      CREATEOS_SANDBOX_RATE_LIMIT_BURST: "1000000000",
      CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: key,
    },
    stdio: ["ignore", "pipe", "inherit"],
  },
);
const port = await new Promise((resolve, reject) => {
  let buf = "";
  const onData = (c) => {
    buf += c.toString();
    const m = /"msg":"listening"[^\n]*"port":(\d+)/.exec(buf);
    if (m) {
      // Keep draining the request log so the pipe never blocks the server.
      server.stdout.off("data", onData);
      server.stdout.resume();
      resolve(Number(m[1]));
    }
  };
  server.stdout.on("data", onData);
  server.once("exit", (code) => reject(new Error(`server exited ${code}`)));
});

// Calibration: a bare node:http server in its own process answering a fixed JSON body, measured with the
// same client. On a shared 2-core machine this is the ceiling any Node server reaches at that moment.
const bare = spawn(
  process.execPath,
  [
    "-e",
    `const b='{"status":"success","data":{"up":true}}';require("node:http").createServer((q,r)=>{r.writeHead(200,{"content-type":"application/json","content-length":b.length});r.end(b)}).listen(0,"127.0.0.1",function(){console.log(this.address().port)})`,
  ],
  { stdio: ["ignore", "pipe", "inherit"] },
);
const barePort = await new Promise((resolve) =>
  bare.stdout.once("data", (d) => resolve(Number(String(d).trim()))),
);

/** One scenario: CONNECTIONS sockets, each looping request → full response → next request. */
async function run(name, pathFor, seconds, targetPort = port) {
  const lat = [];
  let errors = 0;
  let non200 = 0;
  const deadline = performance.now() + seconds * 1000;
  const conn = () =>
    new Promise((resolve) => {
      const sock = connect(targetPort, "127.0.0.1");
      sock.setNoDelay(true);
      let buf = Buffer.alloc(0);
      let t0 = 0;
      const send = () => {
        if (performance.now() >= deadline) {
          sock.end();
          return;
        }
        t0 = performance.now();
        sock.write(`GET ${pathFor()} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: ${key}\r\n\r\n`);
      };
      sock.on("connect", send);
      sock.on("data", (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        for (;;) {
          const h = buf.indexOf("\r\n\r\n");
          if (h === -1) return;
          const head = buf.subarray(0, h).toString("latin1");
          const m = /content-length:\s*(\d+)/i.exec(head);
          const len = m ? Number(m[1]) : 0;
          if (buf.length < h + 4 + len) return;
          if (!head.startsWith("HTTP/1.1 200")) non200++;
          buf = buf.subarray(h + 4 + len);
          lat.push(performance.now() - t0);
          send();
        }
      });
      sock.on("error", () => {
        errors++;
        resolve();
      });
      sock.on("close", () => resolve());
    });
  const t = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, conn));
  const elapsed = (performance.now() - t) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? Number.NaN;
  return {
    name,
    requests: lat.length,
    rps: lat.length / elapsed,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    max: lat.at(-1),
    errors,
    non200,
  };
}

let i = 0;
const byId = () => `/v1/sandboxes/${ids[i++ % ids.length]}`;
try {
  await run("warm-up", byId, 2);
  const results = [await run("GET /v1/sandboxes/:id", byId, DURATION_S)];
  if (!process.argv.includes("--id-only")) {
    results.push(await run("GET /v1/sandboxes?limit=50", () => "/v1/sandboxes?limit=50", DURATION_S));
    results.push(await run("GET /healthz (no auth, no DB)", () => "/healthz", Math.max(3, DURATION_S / 2)));
  }
  results.push(
    await run("calibration: bare node:http, fixed body", () => "/", Math.max(3, DURATION_S / 2), barePort),
  );
  const fmt = (n, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  console.log(
    `\ncontrol-plane API bench — ${CONNECTIONS} connections, ${DURATION_S}s per scenario, ${ROWS} sandbox rows, node ${process.version}, loopback`,
  );
  console.log("| scenario | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | non-200 | errors |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    console.log(
      `| ${r.name} | ${r.requests} | ${fmt(r.rps, 0)} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${r.non200} | ${r.errors} |`,
    );
  }
  const main = results[0];
  const cal = results.at(-1);
  console.log(
    `GET /v1/sandboxes/:id reaches ${fmt((100 * main.rps) / cal.rps, 0)}% of the bare-node:http ceiling measured in this run`,
  );
  const ok = main.rps >= 5000 && main.p99 < 10;
  console.log(`\ngoal GET /v1/sandboxes/:id ≥ 5000 req/s and p99 < 10 ms: ${ok ? "met" : "NOT met"}`);
} finally {
  bare.kill("SIGTERM");
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  rmSync(dataDir, { recursive: true, force: true });
}
