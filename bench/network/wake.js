#!/usr/bin/env node
// Ingress wake benchmark: the first byte of a request that wakes a paused sandbox, against the first byte
// of one to a running sandbox, through the real server (`createos-sandbox serve` with its engine) and its
// ingress listener.
//
//   npx tsc -b packages/server && node bench/network/wake.js [--reps 10] [--image devbox:1] [--shape s-1vcpu-256mb]
//
// Prints a markdown table (ms, curl's time_starttransfer). Run it alone: VMs under TCG do not share well.
import { execFile } from "node:child_process";
import { loadavg } from "node:os";
import { promisify } from "node:util";
import { parseArgs } from "node:util";
import { CreateosSandboxClient } from "@nodeops-createos/sandbox";
import { destroyAll, startEngineServer } from "../../packages/server/dist/test/engine-helpers.js";
import { cleanup } from "../../packages/server/dist/test/helpers.js";

const pexec = promisify(execFile);
const { values } = parseArgs({
  options: {
    reps: { type: "string", default: "10" },
    image: { type: "string", default: "devbox:1" },
    shape: { type: "string", default: "s-1vcpu-256mb" },
  },
});
const reps = Number(values.reps);

/** ms to the first byte of the response, as curl measures it; throws unless the answer is 200. */
async function firstByte(url) {
  const { stdout } = await pexec("curl", [
    "-s",
    "-o",
    "/dev/null",
    "-m",
    "120",
    "-w",
    "%{http_code} %{time_starttransfer}",
    url,
  ]);
  const [code, t] = stdout.split(" ");
  if (code !== "200") throw new Error(`${url}: HTTP ${code}`);
  return Number(t) * 1000;
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const s = await startEngineServer({});
try {
  const client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
  const sb = await client.createSandbox({ shape: values.shape, rootfs: values.image, ingress_enabled: true });
  await sb.runCommand("sh", ["-c", "mkdir -p /tmp/w && echo ok > /tmp/w/index.html"]);
  await sb.runCommand("sh", [
    "-c",
    "setsid nohup python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/w >/dev/null 2>&1 &",
  ]);
  const url = `${sb.previewUrl(8000)}/`;
  for (let i = 0; i < 50; i++) {
    if (
      await firstByte(url).then(
        () => true,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const warm = [];
  const woken = [];
  for (let i = 0; i < reps; i++) {
    warm.push(await firstByte(url));
    await sb.pause();
    await sb.waitUntilPaused({ timeoutMs: 120_000 });
    woken.push(await firstByte(url));
  }
  const f = (x) => x.toFixed(0);
  process.stdout.write(
    `\n${values.image}, ${values.shape}, ${reps} reps, load ${loadavg()[0].toFixed(1)}\n\n`,
  );
  process.stdout.write("| request | p50 ms | p90 ms | max ms |\n|---|---|---|---|\n");
  for (const [name, xs] of [
    ["running sandbox", warm],
    ["paused sandbox (wakes it)", woken],
  ])
    process.stdout.write(`| ${name} | ${f(pct(xs, 50))} | ${f(pct(xs, 90))} | ${f(Math.max(...xs))} |\n`);
} finally {
  await destroyAll(s, [s.adminKey]);
  await s.stop();
  cleanup(s.dataDir);
}
