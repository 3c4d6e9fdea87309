/**
 * The agent as PID 1, without a VM: a new PID, mount, UTS and network namespace (unshare) gives it
 * pid 1, its own mounts, hostname and loopback. /etc/hostname and /etc/hosts are bind-mounted from
 * temp files so the host's are never touched. Needs root and unshare, like the engine itself: where they
 * are missing the suite fails saying so rather than passing on nothing.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AgentClient, type AgentEvent } from "./client.js";
import { buildAgent } from "./testagent.js";

// Not under /tmp or /run: the agent mounts tmpfs there inside its namespace.
const dir = mkdtempSync("/var/tmp/agent-pid1-test-");
const sock = join(dir, "a.sock");
const canRun =
  process.getuid?.() === 0 &&
  spawnSync("unshare", ["--pid", "--fork", "--mount", "--uts", "--net", "true"]).status === 0;
let ns: ChildProcess | undefined;
let client: AgentClient;
const events: AgentEvent[] = [];

before(async () => {
  assert.ok(canRun, "pid 1 tests need root and a working unshare (the engine needs both too)");
  const bin = buildAgent(dir);
  writeFileSync(join(dir, "hostname"), "before\n");
  writeFileSync(join(dir, "hosts"), "127.0.0.1 localhost\n");
  const script = [
    `mount --bind ${dir}/hostname /etc/hostname`,
    `mount --bind ${dir}/hosts /etc/hosts`,
    `exec ${bin} --listen unix:${sock}`,
  ].join(" && ");
  ns = spawn(
    "unshare",
    ["--pid", "--fork", "--mount", "--uts", "--net", "--propagation", "private", "sh", "-c", script],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  client = new AgentClient(sock, { readyTimeoutMs: 10_000 });
  client.on("event", (e: AgentEvent) => events.push(e));
});

after(() => {
  client?.close();
  ns?.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

async function run(argv: string[]): Promise<{ exit_code: number; out: string }> {
  let out = "";
  const r = await client.exec(
    { argv },
    {
      onStdout: (b) => {
        out += b.toString();
      },
      onStderr: (b) => {
        out += b.toString();
      },
    },
  );
  return { exit_code: r.exit_code, out };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("pid 1: mounts, loopback, default env", async () => {
  const h = await client.hello();
  assert.equal(h.pid, 1);
  const mounts = (await run(["cat", "/proc/mounts"])).out
    .split("\n")
    .map((l) => l.split(" ").slice(1, 3).join(" "));
  for (const m of [
    "/proc proc",
    "/sys sysfs",
    "/dev/pts devpts",
    "/dev/shm tmpfs",
    "/run tmpfs",
    "/tmp tmpfs",
    "/sys/fs/cgroup cgroup2",
  ]) {
    assert.ok(mounts.includes(m), `${m} mounted`);
  }
  const flags = Number.parseInt((await run(["cat", "/sys/class/net/lo/flags"])).out.trim(), 16);
  assert.equal(flags & 1, 1, "lo is up");
});

test("pid 1: orphans are reaped, exec statuses are not stolen", async () => {
  const before = (await client.stats()).orphans_reaped ?? 0;
  // Each sh leaves two background children that outlive it and are reparented to PID 1.
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) => run(["sh", "-c", `sleep 0.1 & sleep 0.2 & exit ${i + 1}`])),
  );
  results.forEach((r, i) => assert.equal(r.exit_code, i + 1));
  await sleep(600);
  const after = (await client.stats()).orphans_reaped ?? 0;
  assert.ok(after - before >= 20, `reaped ${after - before} orphans`);
  const states = (await run(["sh", "-c", "cat /proc/[0-9]*/stat"])).out;
  const zombies = states.split("\n").filter((l) => l.split(") ")[1]?.startsWith("Z"));
  assert.deepEqual(zombies, []);
});

test("pid 1: SIGTERM to init is survived", async () => {
  await run(["kill", "-TERM", "1"]);
  await run(["kill", "-INT", "1"]);
  await sleep(100);
  assert.equal((await run(["echo", "alive"])).out, "alive\n");
});

test("pid 1: configure sets the hostname", async () => {
  await client.configure({ hostname: "sbx-pid1-test", envs: { FROM_CONFIGURE: "yes" } });
  assert.equal((await run(["hostname"])).out, "sbx-pid1-test\n");
  assert.equal(readFileSync(join(dir, "hostname"), "utf8"), "sbx-pid1-test\n");
  assert.match(readFileSync(join(dir, "hosts"), "utf8"), /127\.0\.1\.1\tsbx-pid1-test/);
  assert.equal((await run(["sh", "-c", "echo $FROM_CONFIGURE"])).out, "yes\n");
  assert.notEqual(execFileSync("hostname").toString().trim(), "sbx-pid1-test", "host untouched");
});

test("pid 1: self-signal over the FIFO and over HTTP on 127.0.0.1:1029", async () => {
  await run(["sh", "-c", "echo park tired > /run/self"]);
  const js =
    "fetch('http://127.0.0.1:1029/self/delete?reason=done',{method:'POST'}).then(r=>console.log(r.status))";
  const r = await run([process.execPath, "-e", js]);
  assert.equal(r.out.trim(), "202");
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && events.filter((e) => e.event === "self").length < 2) await sleep(20);
  const self = events.filter((e) => e.event === "self").map((e) => `${e.action}:${e.reason}`);
  assert.deepEqual(self, ["pause:tired", "delete:done"]);
});

test("pid 1: shutdown ends the namespace", async () => {
  const exited = new Promise((r) => ns!.once("exit", r));
  await client.shutdown();
  await Promise.race([exited, sleep(5000).then(() => assert.fail("still running"))]);
});
