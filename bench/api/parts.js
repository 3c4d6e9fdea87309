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
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cpuOf, dist, load, median, pinning, seed } from "./lib.js";

const MODES = {
  bare: "bare node:http, same answer",
  fastify: "minimal Fastify, same answer",
  layer: "our HTTP layer, by-id route",
  "no-log": "… without the request log line",
  "no-metrics": "… without request metrics",
  "no-admission": "… without admission (no key check, no rate limit)",
  "no-store": "… without the store read (row read at start)",
};

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

if (process.argv[2] === "--serve") {
  await serve(process.argv[3], process.argv[4], process.argv[5]);
} else {
  const i = process.argv.indexOf("--rounds");
  const rounds = i === -1 ? 10 : Number(process.argv[i + 1]);
  const { spawnNode } = pinning();
  const dir = mkdtempSync(join(tmpdir(), "csb-parts-"));
  const [id] = await seed(dir, 1);
  const here = fileURLToPath(import.meta.url);
  const servers = [];
  try {
    for (const mode of Object.keys(MODES)) {
      const p = spawnNode([here, "--serve", mode, dir, id], { stdio: ["ignore", "pipe", "inherit"] });
      const port = await new Promise((r) =>
        p.stdout.once("data", (d) => r(Number(String(d).split("\n")[0]))),
      );
      p.stdout.resume();
      servers.push({ mode, port, p, n: 0, cpu: 0, rps: [] });
    }
    const path = () => `/v1/sandboxes/${id}`;
    for (const s of servers) await load(s.port, path, 2);
    for (let r = 0; r < rounds; r++) {
      for (const s of r % 2 ? [...servers].reverse() : servers) {
        const c0 = cpuOf(s.p.pid);
        const { n, errors, non200 } = await load(s.port, path, 1);
        if (errors || non200)
          throw new Error(`${s.mode}: ${errors} connection errors, ${non200} answers not 200`);
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
