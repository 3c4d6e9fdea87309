/**
 * The client against a hostile agent (hostile.ts, a separate process): overruns of the window, repeated
 * frames, impossible file sizes, an event flood and mutated golden frames cost the host a channel or the
 * connection, never unbounded memory or the process.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { HostdError, INITIAL_WINDOW } from "@createos-sandbox/protocol";
import { connectAgent, connectAgentWith } from "../vmm/guest.js";
import { AgentClient, type AgentClientOptions } from "./client.js";
import { until } from "./testagent.js";

/** The bound every test states for the host's RSS growth while the agent misbehaves. */
const RSS_BOUND = 96 << 20;
const MiB = (n: number) => `${(n / 1048576).toFixed(0)} MiB`;

const tmp = mkdtempSync(join(tmpdir(), "hostile-agent-"));
const procs: ChildProcess[] = [];
const uncaught: unknown[] = [];
process.on("uncaughtException", (e) => uncaught.push(e));
after(() => {
  for (const p of procs) p.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(uncaught, [], "nothing the agent sent may throw in the host");
});

let n = 0;
async function hostile(mode: string, seed = 1, opts: AgentClientOptions = {}) {
  const sock = join(tmp, `h${n++}.sock`);
  const bin = fileURLToPath(new URL("./hostile.js", import.meta.url));
  const p = spawn(process.execPath, [bin, sock, mode, String(seed)], { stdio: ["ignore", "ignore", "pipe"] });
  procs.push(p);
  await new Promise<void>((resolve, reject) => {
    p.stderr!.on("data", (b: Buffer) => b.toString().includes("listening") && resolve());
    p.once("exit", (code) => reject(new Error(`hostile agent exited ${code}`)));
  });
  const client = new AgentClient(sock, { readyTimeoutMs: 3000, ...opts });
  const warnings: unknown[] = [];
  client.on("warning", (msg: string) => warnings.push(msg));
  return {
    sock,
    client,
    warnings,
    stop: () => {
      client.close();
      p.kill("SIGKILL");
    },
  };
}

/** Runs `fn` while sampling RSS; returns its peak growth over the start. */
async function peakGrowth(fn: () => Promise<void>): Promise<number> {
  const base = process.memoryUsage().rss;
  let peak = 0;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss - base);
  }, 10);
  try {
    await fn();
  } finally {
    clearInterval(t);
  }
  return Math.max(peak, process.memoryUsage().rss - base);
}

const isUnreachable = (re: RegExp) => (e: unknown) =>
  e instanceof HostdError && e.code === "agent_unreachable" && re.test(e.message);

const never = () => new Promise<void>(() => {});

test("an agent that ignores WINDOW loses the channel, and after three the connection", async () => {
  const h = await hostile("flood");
  let disconnects = 0;
  h.client.on("disconnect", () => disconnects++);
  const growth = await peakGrowth(async () => {
    // A consumer that takes nothing: the host grants no credit, so anything past 1 MiB is an overrun.
    await assert.rejects(h.client.exec({ argv: ["x"] }, { onStdout: never }), isUnreachable(/window/));
    // The flood goes on for the closed channel: dropped as it arrives, not kept.
    await new Promise((r) => setTimeout(r, 1500));
    // A download nobody reads yet, then a tunnel: the same.
    const file = await h.client.readFile("/f");
    const fileErr = await new Promise((r) => file.body.once("error", r));
    assert.ok(isUnreachable(/window/)(fileErr), String(fileErr));
    const tunnel = await h.client.connectTcp(80);
    tunnel.pause();
    await new Promise((r) => tunnel.once("error", r));
    assert.ok(await until(() => disconnects === 1, 5000), "the third overrun drops the connection");
  });
  assert.equal(h.warnings.length, 3);
  console.log(`# flood: rss growth ${MiB(growth)} (bound ${MiB(RSS_BOUND)})`);
  assert.ok(growth < RSS_BOUND, `rss grew ${MiB(growth)}`);
  // The process and the client live on: the next call connects afresh.
  assert.deepEqual(await h.client.stats(), { open_channels: 0 });
  h.stop();
});

test("an agent that repeats every frame: each operation settles once, with what was sent", async () => {
  const h = await hostile("repeat");
  let out = "";
  const r = await h.client.exec(
    { argv: ["x"], stdin: Buffer.from("in") },
    {
      onStdout: (c) => {
        out += c.toString();
      },
    },
  );
  assert.equal(r.exit_code, 0);
  assert.equal(out, "hello\nhello\n", "data frames are data: both copies are delivered");
  const { stat, body } = await h.client.readFile("/f");
  assert.equal(stat.size, 4);
  assert.equal(Buffer.concat(await body.toArray()).toString(), "datadata");
  const tunnel = await h.client.connectTcp(80);
  assert.deepEqual(await tunnel.toArray(), []);
  assert.deepEqual(await h.client.stats(), { open_channels: 0 });
  assert.deepEqual(h.warnings, []);
  h.stop();
});

test("an agent that lies about file sizes: impossible sizes fail, a short one costs one window", async () => {
  const h = await hostile("liar");
  for (const path of ["/neg", "/huge", "/frac"])
    await assert.rejects(h.client.readFile(path), isUnreachable(/impossible file size/), path);
  const growth = await peakGrowth(async () => {
    const { stat, body } = await h.client.readFile("/small");
    assert.equal(stat.size, 10);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(body.readableLength <= INITIAL_WINDOW, `buffered ${body.readableLength}`);
    let got = 0;
    for await (const c of body) got += (c as Buffer).length;
    assert.equal(got, 64 << 20, "what arrives within the window is passed on");
  });
  console.log(`# liar: rss growth ${MiB(growth)} (bound ${MiB(RSS_BOUND)})`);
  assert.ok(growth < RSS_BOUND, `rss grew ${MiB(growth)}`);
  h.stop();
});

test("an agent that floods events: 200 000 pass through in bounded memory, bogus actions dropped", async () => {
  const h = await hostile("events");
  h.client.close();
  const agent = await connectAgent(h.sock, 3000);
  let self = 0;
  agent.onSelf((action) => {
    assert.equal(action, "pause");
    self++;
  });
  const growth = await peakGrowth(async () => {
    assert.ok(await until(() => self === 100_000, 60_000), `saw ${self} self events`);
  });
  console.log(`# events: rss growth ${MiB(growth)} over 200 MiB of events (bound ${MiB(RSS_BOUND)})`);
  assert.ok(growth < RSS_BOUND, `rss grew ${MiB(growth)}`);
  agent.close();
  h.stop();
});

test("an agent that answers with mutated golden frames: nothing throws, every call settles", async () => {
  const opts = { openTimeoutMs: 300, rpcTimeoutMs: 300 };
  let settled = 0;
  const growth = await peakGrowth(async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const h = await hostile("mutate", seed, opts);
      const calls = [
        h.client.exec({ argv: ["x"], stdin: Readable.from([Buffer.from("in")]) }, { onStdout: () => {} }),
        h.client.readFile("/f").then(({ body }) => body.toArray()),
        h.client.writeFile("/f", Readable.from([Buffer.from("x")])),
        h.client.connectTcp(80).then((s) => s.toArray()),
        h.client.stats(),
      ];
      // A lost answer times out; a channel the garbage left open (no EXIT) is the guest's to keep, until
      // the connection goes: then every call settles.
      const results = calls.map((c) =>
        c.then(
          () => "ok",
          () => "err",
        ),
      );
      await new Promise((r) => setTimeout(r, 600));
      h.stop();
      const deadline = new Promise((r) => setTimeout(r, 2000, "hung"));
      const all = await Promise.all(results.map((c) => Promise.race([c, deadline])));
      assert.ok(!all.includes("hung"), `seed ${seed}: ${all}`);
      settled += all.length;
    }
  });
  console.log(`# mutate: ${settled} calls settled over 40 seeds, rss growth ${MiB(growth)}`);
  assert.ok(growth < RSS_BOUND, `rss grew ${MiB(growth)}`);
});

test("an agent that never answers an OPEN: writeFile and the others fail after the timeout", async () => {
  const h = await hostile("silent", 1, { openTimeoutMs: 400 });
  const t0 = Date.now();
  const calls = [
    h.client.writeFile("/f", Readable.from([Buffer.from("x")])),
    h.client.readFile("/f"),
    h.client.exec({ argv: ["x"] }),
    h.client.connectTcp(80),
    h.client.openPty({ rows: 24, cols: 80 }),
  ];
  await Promise.all(calls.map((c) => assert.rejects(c, isUnreachable(/did not answer .* within 400 ms/))));
  assert.ok(Date.now() - t0 < 3000);
  h.stop();
});

test("an agent older than hello's identity (a stale image) answers without `configured`: the host configures it itself", async () => {
  const h = await hostile("silent");
  try {
    let made = 0;
    const identity = () => {
      made++;
      return { hostname: "sb", envs: {}, time_ns: Date.now() * 1e6, entropy: "AAEC" };
    };
    const up = await connectAgentWith(h.sock, 3000, identity);
    assert.ok(made >= 1, "the hello carried the identity");
    assert.equal(up.configured, false);
    // What bring-up then sends (bringup.ts `identity`): answered as any RPC.
    await up.agent.configure({ hostname: "sb", envs: {}, time_ns: Date.now() * 1e6, entropy: "AAEC" });
    up.agent.close();
  } finally {
    h.stop();
  }
});
