// The remote side of the paired engine benchmark (paired.js forks this): two LocalHostDaemons — one with
// the warm pool, one without, like run.js's d and d0 — each served by createHostdServer on 127.0.0.1, so
// the benchmark reaches them through RemoteHostDaemon across a real socket and a second event loop.
//
// Environment: BENCH_IMAGE, BENCH_TOKEN (not argv: the token stays out of `ps`). Over the IPC channel it
// sends {ready: {pooled, onDemand}} once listening, answers {op: "poolIdle", id} with {id} (poolIdle is
// not part of the HostDaemon interface, and the benchmark waits on it between repetitions), and on
// {op: "close"} or a lost parent destroys its VMs, closes and exits.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalHostDaemon } from "../../packages/hostd/dist/index.js";
import { createHostdServer, listenHostd } from "../../packages/hostd/dist/remote/serve.js";
import { openOpts } from "./lib.js";

const image = process.env.BENCH_IMAGE ?? "debian:12";
const token = process.env.BENCH_TOKEN ?? "";
const dirs = [mkdtempSync(join(tmpdir(), "csb-bench-r-")), mkdtempSync(join(tmpdir(), "csb-bench-r0-"))];
const pooled = await LocalHostDaemon.open(openOpts(image, dirs[0], { hostId: "bench-remote" }));
const onDemand = await LocalHostDaemon.open(
  openOpts(image, dirs[1], { hostId: "bench-remote0", warmPool: 0 }),
);
const servers = [createHostdServer(pooled, { token }), createHostdServer(onDemand, { token })];
const urls = await Promise.all(servers.map((s) => listenHostd(s, "127.0.0.1:0")));

let closing;
function shutdown() {
  closing ??= (async () => {
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
    for (const d of [pooled, onDemand]) {
      for (const v of await d.list()) await d.destroy(v.sandbox_id).catch(() => {});
      await d.close();
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  })();
  return closing;
}

process.on("message", (m) => {
  if (m.op === "poolIdle") void pooled.poolIdle().then(() => process.send({ id: m.id }));
  else if (m.op === "close") void shutdown();
});
process.once("disconnect", () => void shutdown());
process.send({ ready: { pooled: urls[0], onDemand: urls[1] } });
