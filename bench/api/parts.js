#!/usr/bin/env node
// Where a GET by id's CPU goes, measured in place: the server's HTTP layer (`createHttp`, packages/server/dist)
// serving one by-id route as the product's does (admission, store read, kept view text, request line,
// metrics), beside a bare `node:http` server and a minimal Fastify app answering the same bytes, and beside
// the layer with one piece at a time left out. Each server is its own process on CPU 1, the load generator on
// CPU 0; the servers take turns in interleaved 1 s rounds (as bench/api/run.js), and each row gives the server
// CPU per request and the median of its per-round ratios to the bare server.
//
// A piece's cost is the row's CPU beside the full layer's — in place, with everything else the request does
// around it, which is what it costs the product (a piece timed in a loop by itself costs a fraction of it).
//
// Usage: node bench/api/parts.js [--rounds 10]   (npm run bench -- api/parts)
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const dist = join(root, "packages/server/dist");
const KEY = `skp_bench${"x".repeat(28)}`;
const MODES = {
  bare: "bare node:http, same answer",
  fastify: "minimal Fastify, same answer",
  layer: "our HTTP layer, by-id route",
  "no-log": "… without the request log line",
  "no-metrics": "… without request metrics",
  "no-admission": "… without admission (no key check, no rate limit)",
  "no-store": "… without the store read (row read at start)",
};

/** The row every server answers, in the database at `dir`; returns what the servers need. */
async function seed(dir) {
  const { SqliteStore } = await import(join(dist, "store/sqlite.js"));
  const { newSandboxId } = await import(join(dist, "ulid.js"));
  const store = SqliteStore.open(join(dir, "db.sqlite"));
  const user = await store.createUser("admin");
  await store.addApiKey(user.id, KEY);
  const now = new Date().toISOString();
  const id = newSandboxId();
  await store.insertSandbox({
    ...{ id, user_id: user.id, name: "bench", status: "running", shape: "s-1vcpu-256mb", rootfs: "devbox:1" },
    ...{ vcpu: 1, mem_mib: 256, disk_mib: 10240, region: "local", ip: "10.201.0.1", spawn_ms: 180.5 },
    ...{ created_at: now, running_at: now, ingress_enabled: false, egress: ["api.example.com:443"] },
    ...{ envs: { MODE: "bench" }, ssh_pubkeys: [], bandwidth_quota_bytes: 0, bandwidth_used_bytes: 0 },
    ...{ bandwidth_ingress_bytes: 0, last_activity_at: Date.now() },
  });
  await store.close();
  return id;
}

/** One server process: `--serve <mode> <data dir> <sandbox id>`; prints its port. */
async function serve(mode, dir, id) {
  const { loadConfig } = await import(join(dist, "config.js"));
  const { SqliteStore } = await import(join(dist, "store/sqlite.js"));
  const { sandboxViewJson } = await import(join(dist, "views.js"));
  const env = { ...process.env, CREATEOS_SANDBOX_RATE_LIMIT_RPS: "1000000000" };
  const cfg = loadConfig({ dataDir: dir }, { ...env, CREATEOS_SANDBOX_RATE_LIMIT_BURST: "1000000000" });
  const store = SqliteStore.open(join(dir, "db.sqlite"));
  const row = await store.getSandbox(id);
  const answer = `{"status":"success","data":${sandboxViewJson(row, cfg)}}`;
  const listening = (s) => s.listen(0, "127.0.0.1", () => console.log(s.address().port));
  if (mode === "bare") {
    const body = Buffer.from(answer);
    const { createServer } = await import("node:http");
    const headers = { "content-type": "application/json; charset=utf-8", "content-length": body.length };
    return listening(createServer((_q, r) => r.writeHead(200, headers).end(body)));
  }
  if (mode === "fastify") {
    const { default: Fastify } = await import("fastify");
    const app = Fastify();
    app.get("/v1/sandboxes/:id", (_q, reply) => reply.type("application/json; charset=utf-8").send(answer));
    await app.ready();
    return listening(app.server);
  }
  const { createHttp } = await import(join(dist, "http/server.js"));
  const { route, loadSandbox } = await import(join(dist, "routes/common.js"));
  const { createLogger } = await import(join(dist, "log.js"));
  const { Metrics } = await import(join(dist, "metrics.js"));
  const log = createLogger();
  if (mode === "no-log") log.request = () => undefined;
  const metrics = new Metrics();
  if (mode === "no-metrics") metrics.request = () => undefined;
  const app = { store, cfg };
  const owner = { user_id: row.user_id };
  const byId = route(
    "GET /v1/sandboxes/:id",
    { auth: mode === "no-admission" ? "none" : "user", body: "none" },
    async (ctx) => ({
      json: sandboxViewJson(
        mode === "no-store" ? row : await loadSandbox(app, { ...ctx, principal: ctx.principal ?? owner }),
        cfg,
      ),
    }),
  );
  const { server } = await createHttp({ cfg, store, log, metrics, routes: [byId] });
  listening(server);
}

async function load(port, path, seconds) {
  let n = 0;
  const deadline = performance.now() + seconds * 1000;
  const request = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: ${KEY}\r\n\r\n`;
  const conn = () =>
    new Promise((resolve) => {
      const sock = connect(port, "127.0.0.1");
      sock.setNoDelay(true);
      let buf = Buffer.alloc(0);
      const send = () => (performance.now() >= deadline ? sock.end() : sock.write(request));
      sock.on("connect", send);
      sock.on("data", (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        for (;;) {
          const h = buf.indexOf("\r\n\r\n");
          if (h === -1) return;
          const head = buf.subarray(0, h).toString("latin1");
          const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length < h + 4 + len) return;
          if (!head.startsWith("HTTP/1.1 200")) throw new Error(`not a 200: ${head.split("\r\n")[0]}`);
          buf = buf.subarray(h + 4 + len);
          n++;
          send();
        }
      });
      sock.on("close", resolve);
      sock.on("error", resolve);
    });
  await Promise.all(Array.from({ length: 8 }, conn));
  return n;
}

const cpuOf = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (process.argv[2] === "--serve") {
  await serve(process.argv[3], process.argv[4], process.argv[5]);
} else {
  const i = process.argv.indexOf("--rounds");
  const rounds = i === -1 ? 10 : Number(process.argv[i + 1]);
  const pin = availableParallelism() >= 2 && spawnSync("taskset", ["-V"]).status === 0;
  if (pin) spawnSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
  const dir = mkdtempSync(join(tmpdir(), "csb-parts-"));
  const id = await seed(dir);
  const here = fileURLToPath(import.meta.url);
  const servers = [];
  try {
    for (const mode of Object.keys(MODES)) {
      const args = [process.execPath, here, "--serve", mode, dir, id];
      const p = pin
        ? spawn("taskset", ["-c", "1", ...args], { stdio: ["ignore", "pipe", "inherit"] })
        : spawn(args[0], args.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
      const port = await new Promise((r) =>
        p.stdout.once("data", (d) => r(Number(String(d).split("\n")[0]))),
      );
      p.stdout.resume();
      servers.push({ mode, port, p, n: 0, cpu: 0, rps: [] });
    }
    const path = `/v1/sandboxes/${id}`;
    for (const s of servers) await load(s.port, path, 2);
    for (let r = 0; r < rounds; r++) {
      for (const s of r % 2 ? [...servers].reverse() : servers) {
        const c0 = cpuOf(s.p.pid);
        const n = await load(s.port, path, 1);
        s.cpu += cpuOf(s.p.pid) - c0;
        s.n += n;
        s.rps.push(n);
      }
    }
    const [bare] = servers;
    const layer = servers.find((s) => s.mode === "layer");
    const us = (s) => (1e6 * s.cpu) / s.n;
    console.log(
      `\nGET by id, in place — ${rounds} interleaved rounds of 1 s, 8 connections, node ${process.version}`,
    );
    console.log("| server | req/s | ÷ bare, median of rounds | CPU µs/req | CPU beside the full layer |");
    console.log("|---|---|---|---|---|");
    for (const s of servers) {
      const ratio = median(s.rps.map((x, k) => x / bare.rps[k]));
      const delta = s === layer ? "" : `${(us(s) - us(layer)).toFixed(1)} µs`;
      console.log(
        `| ${MODES[s.mode]} | ${Math.round(s.n / rounds)} | ${(100 * ratio).toFixed(0)} % | ${us(s).toFixed(1)} | ${delta} |`,
      );
    }
  } finally {
    for (const s of servers) s.p.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}
