#!/usr/bin/env node
// Templates, in one run against the real server and engine (`createos-sandbox serve`, a fresh data dir,
// the image cache as it is), through the published SDK:
//   - a cold build of a two-step Dockerfile (apt-get install of one Debian package, then a last step),
//   - the rebuild with only the last step changed (the first step comes from the layer cache),
//   - create latency (POST /v1/sandboxes until it answers running) from the template vs from the built-in
//     base image, each after one create that warms its snapshot.
// Boots VMs: run it under the machine's VM lock (flock /tmp/csb-vmtest.lock node bench/templates/run.js).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CreateosSandboxClient, pollUntil } from "@nodeops-createos/sandbox";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const dataDir = mkdtempSync(join(tmpdir(), "csb-bench-tpl-"));
const key = `skp_bench${"t".repeat(28)}`;
const server = spawn(
  process.execPath,
  [join(root, "packages/server/dist/main.js"), "serve", "--port", "0", "--data-dir", dataDir],
  {
    env: { ...process.env, CREATEOS_SANDBOX_HOSTD: "local", CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: key },
    stdio: ["ignore", "pipe", "inherit"],
  },
);
const url = await new Promise((resolve, reject) => {
  let buf = "";
  server.stdout.on("data", (c) => {
    buf += c;
    const m = /"msg":"listening".*?"port":(\d+)/.exec(buf);
    if (m) resolve(`http://127.0.0.1:${m[1]}`);
  });
  server.once("exit", (code) => reject(new Error(`server exited ${code}`)));
});
const client = new CreateosSandboxClient({ apiKey: key, baseUrl: url, retry: false });
const SHAPE = "s-1vcpu-1gb";

async function readyz() {
  await pollUntil({
    poll: () => fetch(`${url}/readyz`).then((r) => r.status),
    done: (s) => s === 200,
    timeoutMs: 1_800_000,
  });
}

async function build(name, last) {
  const t0 = performance.now();
  const t = await client.templates.create({
    name,
    dockerfile: `FROM nodeops/sandbox:debian\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends jq\nRUN ${last}\n`,
  });
  const done = await pollUntil({
    poll: () => client.templates.get(t.id),
    done: (v) => v.status === "ready" || v.status === "failed",
    timeoutMs: 1_800_000,
  });
  if (done.status !== "ready") throw new Error(`${name}: ${await client.templates.logs(t.id)}`);
  const log = await client.templates.logs(t.id);
  return { ms: performance.now() - t0, cached: (log.match(/---> Using cache/g) ?? []).length, id: t.id };
}

async function createMs(rootfs) {
  const t0 = performance.now();
  const sb = await client.createSandbox({ shape: SHAPE, rootfs });
  const ms = performance.now() - t0;
  await sb.destroy();
  return ms;
}

try {
  await readyz();
  const cold = await build("bench", "echo one > /etc/bench");
  const rebuilt = await build("bench", "echo two > /etc/bench");
  const rows = [
    ["cold build (2 RUN steps)", cold.ms, `${cold.cached} cached`],
    ["rebuild, last step changed", rebuilt.ms, `${rebuilt.cached} cached`],
  ];
  for (const [label, rootfs] of [
    ["create from the template", "bench"],
    ["create from nodeops/sandbox:debian", "nodeops/sandbox:debian"],
  ]) {
    const first = await createMs(rootfs);
    const warm = [];
    for (let i = 0; i < 3; i++) warm.push(await createMs(rootfs));
    warm.sort((a, b) => a - b);
    rows.push([`${label}, first`, first, "boots cold, captures warm"]);
    rows.push([`${label}, median of 3`, warm[1], "warm"]);
  }
  console.log("| what | ms | note |\n|---|---:|---|");
  for (const [w, ms, n] of rows) console.log(`| ${w} | ${Math.round(ms)} | ${n} |`);
} finally {
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  rmSync(dataDir, { recursive: true, force: true });
}
