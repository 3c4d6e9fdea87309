/**
 * The seed lifecycle recipes (shared/spec/how-to-lifecycle.txt), run with only the import swapped,
 * against a scripted state-machine peer — once with our SDK and once with the published 0.7.1 — and
 * the two request logs must be identical. (The real-server run is in the control plane's
 * integration suite; this pins wire parity of the client side.)
 */
import assert from "node:assert/strict";
import type http from "node:http";
import { after, test } from "node:test";
import * as ours from "./index.js";
import { type TestServer, json, ok, startServer } from "./test-helpers.js";

type Sdk = typeof ours;

interface Row {
  id: string;
  status: string;
  name: string;
  auto_pause_after_seconds?: number;
  quota: number;
  forked_from?: string;
}

/** Transitional states advance one step per GET, like a fast real server would. */
const NEXT: Record<string, string> = {
  pausing: "paused",
  resuming: "running",
  forking: "running",
  destroying: "destroyed",
};

function lifecycleServer(): Promise<TestServer> {
  const rows = new Map<string, Row>();
  let seq = 0;
  const viewOf = (r: Row) => {
    const v: Record<string, unknown> = {
      id: r.id,
      status: r.status,
      name: r.name,
      ip: "10.201.0.2",
      vcpu: 4,
      mem_mib: 4096,
      disk_mib: 10240,
      created_at: "2026-01-01T00:00:00Z",
      ingress_enabled: false,
      shape: "s-4vcpu-4gb",
      rootfs: "devbox:1",
    };
    if (r.auto_pause_after_seconds !== undefined) v.auto_pause_after_seconds = r.auto_pause_after_seconds;
    if (r.forked_from) v.forked_from = r.forked_from;
    return v;
  };
  const bw = (r: Row) => ({
    id: r.id,
    quota_bytes: r.quota,
    used_bytes: 5 * 1024 ** 3,
    ingress_bytes: 0,
    remaining_bytes: r.quota - 5 * 1024 ** 3,
    capped: r.quota <= 5 * 1024 ** 3,
  });
  const handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => {
    const url = new URL(req.url ?? "", "http://x");
    const parts = url.pathname.split("/").filter(Boolean);
    if (url.pathname === "/healthz") return ok(res, { up: true });
    if (parts[0] !== "v1" || parts[1] !== "sandboxes")
      return json(res, 404, { status: "fail", data: "no route" });
    if (req.method === "POST" && parts.length === 2) {
      const reqBody = JSON.parse(body) as { shape: string; auto_pause_after_seconds?: number };
      const r: Row = { id: `sb-${++seq}`, status: "running", name: `box-${seq}`, quota: 5 * 1024 ** 3 };
      if (reqBody.auto_pause_after_seconds !== undefined)
        r.auto_pause_after_seconds = reqBody.auto_pause_after_seconds;
      rows.set(r.id, r);
      const v = viewOf(r);
      return ok(res, { ...v, spawn_ms: 120, egress: [], bandwidth_quota_bytes: r.quota });
    }
    const r = rows.get(parts[2] ?? "");
    if (!r) return json(res, 404, { status: "fail", data: "sandbox not found" });
    const action = parts[3];
    if (req.method === "GET" && action === undefined) {
      const v = viewOf(r);
      r.status = NEXT[r.status] ?? r.status;
      return ok(res, v);
    }
    if (req.method === "POST" && action === "pause") {
      if (r.status !== "running")
        return json(res, 409, { status: "fail", data: { status: `cannot pause ${r.status}` } });
      r.status = "pausing";
      return json(res, 202, { status: "success", data: viewOf(r) }, { "x-poll-after": "1" });
    }
    if (req.method === "POST" && action === "resume") {
      if (r.status !== "paused")
        return json(res, 409, { status: "fail", data: { status: `cannot resume ${r.status}` } });
      r.status = "resuming";
      return json(res, 202, { status: "success", data: viewOf(r) });
    }
    if (req.method === "POST" && action === "fork") {
      if (r.status !== "paused") return json(res, 409, { status: "fail", data: "source must be paused" });
      const opts = JSON.parse(body || "{}") as { start_paused?: boolean };
      const child: Row = {
        id: `sb-${++seq}`,
        status: opts.start_paused ? "paused" : "forking",
        name: `box-${seq}`,
        quota: 5 * 1024 ** 3,
        forked_from: r.id,
      };
      rows.set(child.id, child);
      return ok(res, viewOf(child));
    }
    if (req.method === "PATCH") {
      const patch = JSON.parse(body) as { auto_pause_after_seconds?: number; disable_auto_pause?: boolean };
      if (patch.disable_auto_pause) r.auto_pause_after_seconds = undefined;
      else if (patch.auto_pause_after_seconds !== undefined)
        r.auto_pause_after_seconds = patch.auto_pause_after_seconds;
      return ok(res, viewOf(r));
    }
    if (req.method === "GET" && action === "bandwidth") return ok(res, bw(r));
    if (req.method === "POST" && action === "bandwidth") {
      r.quota += (JSON.parse(body) as { add_bytes: number }).add_bytes;
      return ok(res, bw(r));
    }
    if (req.method === "DELETE") {
      const already = r.status === "destroyed";
      if (!already) r.status = "destroying";
      return ok(res, { id: r.id, status: already ? "destroyed" : "destroying" });
    }
    return json(res, 404, { status: "fail", data: "no route" });
  };
  return startServer(handler);
}

/** The recipes of how-to-lifecycle.txt, verbatim apart from the import and console output. */
async function recipes(sdk: Sdk, log: (...a: unknown[]) => void): Promise<void> {
  const { CreateosSandboxClient } = sdk;
  {
    const client = new CreateosSandboxClient();
    const sandbox = await client.createSandbox({ shape: "s-4vcpu-4gb", rootfs: "devbox:1" });
    try {
      await sandbox.pause();
      await sandbox.waitUntilPaused();
      log("paused:", sandbox.status);
      await sandbox.resume();
      await sandbox.waitUntilRunning();
      log("running:", sandbox.status);
    } finally {
      await sandbox.destroy();
    }
  }
  {
    const client = new CreateosSandboxClient();
    const sandbox = await client.createSandbox({
      shape: "s-4vcpu-4gb",
      rootfs: "devbox:1",
      auto_pause_after_seconds: 300,
    });
    try {
      await sandbox.setAutoPause(600);
      log("timeout:", sandbox.data.auto_pause_after_seconds);
      await sandbox.setAutoPause(null);
      log("timeout:", sandbox.data.auto_pause_after_seconds ?? "off");
    } finally {
      await sandbox.destroy();
    }
  }
  {
    const client = new CreateosSandboxClient();
    const parent = await client.createSandbox({ shape: "s-4vcpu-4gb", rootfs: "devbox:1" });
    let branchA: Awaited<ReturnType<typeof parent.fork>> | undefined;
    let branchB: Awaited<ReturnType<typeof parent.fork>> | undefined;
    try {
      await parent.pause();
      await parent.waitUntilPaused();
      branchA = await parent.fork();
      branchB = await parent.fork();
      await branchA.waitUntilRunning();
      await branchB.waitUntilRunning();
      log("branch A:", branchA.id);
      log("branch B:", branchB.id);
      log("parent still paused:", parent.status);
      const clone = await parent.fork({ start_paused: true });
      log("clone:", clone.status);
    } finally {
      await Promise.allSettled([branchA?.destroy(), branchB?.destroy(), parent.destroy()]);
    }
  }
  {
    const GiB = 1024 ** 3;
    const client = new CreateosSandboxClient();
    const sandbox = await client.createSandbox({ shape: "s-4vcpu-4gb", rootfs: "devbox:1" });
    try {
      const bw = await sandbox.getBandwidth();
      log(`quota: ${bw.quota_bytes} used: ${bw.used_bytes} capped: ${bw.capped}`);
      if (bw.capped) {
        const updated = await sandbox.rechargeBandwidth(10 * GiB);
        log(`new quota: ${updated.quota_bytes}`);
      }
    } finally {
      const result = await sandbox.destroy();
      log("destroy:", result.status);
      await sandbox.waitUntilDestroyed();
      log("reclaimed:", sandbox.status);
    }
  }
}

const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

async function runWith(sdk: Sdk): Promise<{ output: string[]; wire: string[] }> {
  const s = await lifecycleServer();
  servers.push(s);
  const saved = { url: process.env.CREATEOS_SANDBOX_BASE_URL, key: process.env.CREATEOS_SANDBOX_API_KEY };
  process.env.CREATEOS_SANDBOX_BASE_URL = s.url;
  process.env.CREATEOS_SANDBOX_API_KEY = "skp_recipe_key";
  const output: string[] = [];
  try {
    await recipes(sdk, (...a) => output.push(a.map(String).join(" ")));
  } finally {
    process.env.CREATEOS_SANDBOX_BASE_URL = saved.url;
    process.env.CREATEOS_SANDBOX_API_KEY = saved.key;
    if (saved.url === undefined) Reflect.deleteProperty(process.env, "CREATEOS_SANDBOX_BASE_URL");
    if (saved.key === undefined) Reflect.deleteProperty(process.env, "CREATEOS_SANDBOX_API_KEY");
  }
  const wire = s.requests
    // The published SDK pre-warms its connection pool with a /healthz probe.
    .filter((r) => r.url !== "/healthz")
    .map(
      (r) =>
        `${r.method} ${r.url} ${r.body} key=${String(r.headers["x-api-key"])} ct=${String(r.headers["content-type"])}`,
    );
  return { output, wire };
}

test("lifecycle recipes run unchanged on our SDK, with the same output and wire traffic as 0.7.1", async () => {
  const mine = await runWith(ours);
  assert.deepEqual(mine.output, [
    "paused: paused",
    "running: running",
    "timeout: 600",
    "timeout: off",
    "branch A: sb-4",
    "branch B: sb-5",
    "parent still paused: paused",
    "clone: paused",
    `quota: ${5 * 1024 ** 3} used: ${5 * 1024 ** 3} capped: true`,
    `new quota: ${15 * 1024 ** 3}`,
    "destroy: destroying",
    "reclaimed: destroyed",
  ]);
  const published = (await import("@nodeops-createos/sandbox")) as unknown as Sdk;
  const theirs = await runWith(published);
  assert.deepEqual(mine.output, theirs.output);
  // Polling cadence can differ by a GET or two; everything else must match exactly.
  const noPolls = (w: string[]) => w.filter((l) => !/^GET \/v1\/sandboxes\/sb-\d+ {2}/.test(l));
  assert.deepEqual(noPolls(mine.wire), noPolls(theirs.wire));
  assert.ok(mine.wire.every((l) => l.includes("key=skp_recipe_key")));
});
