#!/usr/bin/env node
// API throughput and latency of the control plane's read path: GET /v1/sandboxes/:id and the list, on
// loopback, beside a bare `node:http` server measured the same way, printed as a table.
//
// The real program (`createos-sandbox serve`, packages/server/dist/main.js) runs in its own process with a
// fresh data dir. Sandbox rows are seeded straight into its SQLite database (through the server's own
// store module) so the numbers measure the API — auth, rate limiter, routing, store read, JSON, request log
// and metrics — and not VM boots; the engine is not loaded (CREATEOS_SANDBOX_HOSTD=none). The per-key rate
// limit is raised out of the way but stays in the request path.
//
// The calibration is a bare `node:http` server in its own process answering, for every request, the very
// bytes the product answers a GET by id (same body, same length, a JSON content type): the ceiling any
// Node server reaches for that answer with this client at that moment.
//
// Fairness on a shared machine (other agents' QEMUs come and go): the scenarios run in short interleaved
// rounds (bare, by id, list, healthz, then the reverse order, …) so that both sides of a ratio see the same
// load, and the ratio reported is the median of the per-round ratios beside the ratio of the totals. Where
// the machine has ≥ 2 CPUs the load generator (this process) is pinned to CPU 0 and both servers to CPU 1:
// the same core for either side, and the client never preempts the server it measures. Each server's CPU
// time per request (from /proc/<pid>/stat) is printed too: unlike req/s, it hardly moves with the load of
// others. Both servers are warmed up before the first round.
//
// The load generator is a loop of keep-alive raw-socket HTTP/1.1 clients (one request in flight per
// connection) in this process.
//
// Usage: node bench/api/run.js [--rounds 10] [--round 1] [--connections 8] [--rows 200] [--pin 0] [--id-only]
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuOf, dist, KEY as key, load as loadFor, median, pinning, seed } from "./lib.js";

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const ROUNDS = arg("rounds", 10);
const ROUND_S = arg("round", 1);
const CONNECTIONS = arg("connections", 8);
const ROWS = arg("rows", 200);
const ID_ONLY = process.argv.includes("--id-only");
const { pin: PIN, spawnNode } = pinning(arg("pin", 1) !== 0);

const dataDir = mkdtempSync(join(tmpdir(), "csb-bench-"));
const ids = await seed(dataDir, ROWS);

const server = spawnNode(
  [
    ...(process.env.BENCH_SERVER_ARGS ? process.env.BENCH_SERVER_ARGS.split(" ") : []),
    join(dist, "main.js"),
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

const byIdBody = await (
  await fetch(`http://127.0.0.1:${port}/v1/sandboxes/${ids[0]}`, { headers: { "x-api-key": key } })
).text();
const bare = spawnNode(
  [
    "-e",
    `const b=Buffer.from(process.env.BODY);require("node:http").createServer((q,r)=>{r.writeHead(200,{"content-type":"application/json; charset=utf-8","content-length":b.length});r.end(b)}).listen(0,"127.0.0.1",function(){console.log(this.address().port)})`,
  ],
  { env: { ...process.env, BODY: byIdBody }, stdio: ["ignore", "pipe", "inherit"] },
);
const barePort = await new Promise((resolve) =>
  bare.stdout.once("data", (d) => resolve(Number(String(d).trim()))),
);

const load = (port, pathFor, seconds, lat) =>
  loadFor(port, pathFor, seconds, { connections: CONNECTIONS, lat });

let i = 0;
const byId = () => `/v1/sandboxes/${ids[i++ % ids.length]}`;
const scenarios = [
  { name: "calibration: bare node:http, same body", port: barePort, pid: bare.pid, path: () => "/" },
  { name: "GET /v1/sandboxes/:id", port, pid: server.pid, path: byId },
  ...(ID_ONLY
    ? []
    : [
        { name: "GET /v1/sandboxes?limit=50", port, pid: server.pid, path: () => "/v1/sandboxes?limit=50" },
        { name: "GET /healthz (no auth, no DB)", port, pid: server.pid, path: () => "/healthz" },
      ]),
].map((s) => ({ ...s, lat: [], rounds: [], n: 0, seconds: 0, cpu: 0, errors: 0, non200: 0 }));

const fmt = (n, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "-");
const load1 = () => readFileSync("/proc/loadavg", "utf8").split(" ")[0];

const loadStart = load1();
try {
  for (const s of scenarios) await load(s.port, s.path, 2);
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? scenarios : [...scenarios].reverse();
    for (const s of order) {
      const c0 = cpuOf(s.pid);
      const out = await load(s.port, s.path, ROUND_S, s.lat);
      s.cpu += cpuOf(s.pid) - c0;
      s.n += out.n;
      s.seconds += out.seconds;
      s.errors += out.errors;
      s.non200 += out.non200;
      s.rounds.push(out.n / out.seconds);
    }
  }
  console.log(
    `\ncontrol-plane API bench — ${CONNECTIONS} connections, ${ROUNDS} interleaved rounds of ${ROUND_S} s per scenario, ${ROWS} sandbox rows, ${byIdBody.length}-byte by-id answer, node ${process.version}, loopback, ${PIN ? "client on CPU 0, servers on CPU 1" : "not pinned"}, load average ${loadStart} → ${load1()}`,
  );
  console.log(
    "| scenario | requests | req/s | median round req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | non-200 | errors |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const s of scenarios) {
    s.lat.sort((a, b) => a - b);
    const q = (p) => s.lat[Math.min(s.lat.length - 1, Math.floor(p * s.lat.length))] ?? Number.NaN;
    s.rps = s.n / s.seconds;
    s.p99 = q(0.99);
    s.usPerReq = (1e6 * s.cpu) / s.n;
    console.log(
      `| ${s.name} | ${s.n} | ${fmt(s.rps, 0)} | ${fmt(median(s.rounds), 0)} | ${fmt(q(0.5))} | ${fmt(q(0.9))} | ${fmt(s.p99)} | ${fmt(s.lat.at(-1))} | ${fmt(s.usPerReq, 1)} | ${s.non200} | ${s.errors} |`,
    );
  }
  const [cal, main, list] = scenarios;
  const ratios = main.rounds.map((x, k) => x / cal.rounds[k]);
  const pct = (x) => `${fmt(100 * x, 0)}%`;
  console.log(
    `\nGET /v1/sandboxes/:id ÷ bare node:http: median of ${ROUNDS} round ratios ${pct(median(ratios))} (min ${pct(Math.min(...ratios))}, max ${pct(Math.max(...ratios))}); totals ${pct(main.rps / cal.rps)}; server CPU per request ${fmt(main.usPerReq, 1)} vs ${fmt(cal.usPerReq, 1)} µs (bare ÷ by id ${pct(cal.usPerReq / main.usPerReq)})`,
  );
  const goals = [
    ["GET /v1/sandboxes/:id ≥ 50% of bare (median round ratio)", median(ratios) >= 0.5],
    ["GET /v1/sandboxes/:id ≥ 5000 req/s and p99 < 10 ms", main.rps >= 5000 && main.p99 < 10],
    ...(list ? [["list of 50 ≥ 5000 req/s and p99 < 10 ms", list.rps >= 5000 && list.p99 < 10]] : []),
  ];
  for (const [g, ok] of goals) console.log(`goal ${g}: ${ok ? "met" : "NOT met"}`);
} finally {
  bare.kill("SIGTERM");
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  rmSync(dataDir, { recursive: true, force: true });
}
