/**
 * The agent protocol tested from the TypeScript side against the real Go binary in --listen mode.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { FrameDecoder, FrameKind, HostdError, INITIAL_WINDOW, encodeJson } from "@createos-sandbox/protocol";
import { AgentClient, AgentError, type AgentEvent, toHostdError } from "./client.js";

const agentSrc = fileURLToPath(new URL("../../../agent", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "agent-client-test-"));
const sock = join(tmp, "a.sock");
let agent: ChildProcess;
let selfAddr = "";
let client: AgentClient;

function buildAgent(): string {
  const out = join(tmp, "createos-agent");
  const cache = join(homedir(), ".cache", "createos-sandbox", "go");
  execFileSync("go", ["build", "-trimpath", "-o", out, "./cmd/createos-agent"], {
    cwd: agentSrc,
    env: {
      ...process.env,
      CGO_ENABLED: "0",
      GOCACHE: join(cache, "build"),
      GOPATH: join(cache, "path"),
      GOFLAGS: "-mod=mod",
      GOTOOLCHAIN: "local",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return out;
}

before(async () => {
  const bin = buildAgent();
  agent = spawn(bin, ["--listen", `unix:${sock}`, "--self-addr", "127.0.0.1:0"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start: ${stderr}`)), 10_000);
    agent.stderr!.on("data", (b: Buffer) => {
      stderr += b.toString();
      const m = /self-addr (\S+)/.exec(stderr);
      if (m && stderr.includes("listening")) {
        selfAddr = m[1]!;
        clearTimeout(timer);
        resolve();
      }
    });
    agent.once("exit", (code) => reject(new Error(`agent exited ${code}: ${stderr}`)));
  });
  client = new AgentClient(sock, { readyTimeoutMs: 5000 });
});

after(() => {
  client?.close();
  agent?.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
});

async function run(
  argv: string[],
  opts: { env?: Record<string, string>; cwd?: string; stdin?: Buffer | Readable } = {},
) {
  let stdout = "";
  let stderr = "";
  const r = await client.exec(
    { argv, ...opts },
    {
      onStdout: (b) => {
        stdout += b.toString();
      },
      onStderr: (b) => {
        stderr += b.toString();
      },
    },
  );
  return { ...r, stdout, stderr };
}

function procState(pid: number): string | undefined {
  try {
    // Field 3 of /proc/PID/stat, after the parenthesised command name.
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0];
  } catch {
    return undefined;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

test("hello answers with the agent's identity", async () => {
  const h = await client.hello({ timeoutMs: 5000 });
  assert.equal(h.version, 1);
  assert.match(h.agent, /^createos-agent /);
  assert.match(h.boot_id, /^[0-9a-f]{32}$/);
  assert.equal(h.pid, agent.pid);
});

test("hello times out with agent_unreachable when nobody listens", async () => {
  const c = new AgentClient(join(tmp, "nobody.sock"));
  const t0 = Date.now();
  await assert.rejects(c.hello({ timeoutMs: 300 }), (e: unknown) => {
    return e instanceof HostdError && e.code === "agent_unreachable";
  });
  assert.ok(Date.now() - t0 < 2000);
});

test("hello retries on a socket that accepts but does not answer yet (QEMU before the guest is up)", async () => {
  const front = join(tmp, "front.sock");
  const openAt = Date.now() + 700;
  const held: net.Socket[] = [];
  let conns = 0;
  const proxy = net.createServer((c) => {
    conns++;
    if (Date.now() < openAt) {
      held.push(c); // accepted, never answered: like a chardev whose guest port is closed
      c.on("error", () => {});
      return;
    }
    const up = net.createConnection(sock);
    c.pipe(up).pipe(c);
    c.on("error", () => up.destroy());
    up.on("error", () => c.destroy());
  });
  await new Promise<void>((r) => proxy.listen(front, r));
  const c = new AgentClient(front, { helloAttemptMs: 200 });
  try {
    const t0 = Date.now();
    const h = await c.hello({ timeoutMs: 5000 });
    assert.equal(h.version, 1);
    assert.ok(Date.now() - t0 >= 600, "answered only once the proxy opened");
    assert.ok(conns >= 3, `reconnected (${conns} connections)`);
    assert.equal((await c.exec({ argv: ["true"] })).exit_code, 0);
  } finally {
    c.close();
    for (const h of held) h.destroy();
    proxy.close();
  }
  await client.hello(); // the proxy's connection had replaced ours
});

test("the agent resyncs after garbage on the wire", async () => {
  const raw = net.createConnection(sock);
  await new Promise((r) => raw.once("connect", r));
  const dec = new FrameDecoder();
  const replies: Record<string, unknown>[] = [];
  raw.on("data", (b: Buffer) => {
    for (const f of dec.push(b)) {
      if (f.kind === FrameKind.RPC) replies.push(JSON.parse(f.payload.toString()) as Record<string, unknown>);
    }
  });
  // Half a frame header claiming an oversized payload, then junk, then a good hello and stats.
  raw.write(Buffer.from("c50a0300000000010fffffff0102030405", "hex"));
  raw.write(encodeJson(FrameKind.RPC, 0, { id: 1, method: "hello", params: { version: 1 } }));
  raw.write(encodeJson(FrameKind.RPC, 0, { id: 2, method: "stats", params: {} }));
  assert.ok(await until(() => replies.some((r) => r.id === 2), 3000), JSON.stringify(replies));
  const stats = replies.find((r) => r.id === 2)?.result as { resyncs: number };
  assert.ok(stats.resyncs >= 1, `resyncs ${stats.resyncs}`);
  raw.destroy();
  await client.hello();
});

test("exec: stdout, stderr, exit codes, spawn time", async () => {
  const r = await run(["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
  assert.equal(r.stdout, "hello\n");
  assert.equal(r.stderr, "oops\n");
  assert.equal(r.exit_code, 3);
  assert.equal(r.signal, undefined);
  assert.ok(typeof r.spawn_us === "number" && r.spawn_us > 0);
  assert.ok(typeof r.wall_us === "number" && r.wall_us >= r.spawn_us);
  assert.ok(r.wall_us / 1000 <= r.exec_ms, "the agent's share is within the round trip");
  assert.ok(r.exec_ms > 0);
  assert.equal((await run(["true"])).exit_code, 0);
  assert.equal((await run(["false"])).exit_code, 1);
  const killed = await run(["sh", "-c", "kill -TERM $$"]);
  assert.equal(killed.exit_code, -1);
  assert.equal(killed.signal, "SIGTERM");
});

test("exec: env merges configure envs under per-exec env; default env present", async () => {
  await client.configure({ envs: { SANDBOX_A: "a", SHARED: "from-sandbox" } });
  const r = await run(["sh", "-c", 'echo "$SANDBOX_A $SHARED $PER_EXEC $HOME $LANG $PATH"'], {
    env: { SHARED: "from-exec", PER_EXEC: "p" },
  });
  assert.equal(
    r.stdout,
    "a from-exec p /root C.UTF-8 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
  );
  await client.configure({ envs: {} });
  assert.equal((await run(["sh", "-c", 'echo "[$SANDBOX_A]"'])).stdout, "[]\n");
});

test("exec: cwd, and a cwd that does not exist is an error", async () => {
  assert.equal((await run(["pwd"], { cwd: tmp })).stdout, `${tmp}\n`);
  const r = await run(["pwd"], { cwd: join(tmp, "missing") });
  assert.equal(r.exit_code, -1);
  assert.match(r.error ?? "", /missing/);
});

test("exec: stdin from a Buffer and from a stream; no stdin reads /dev/null", async () => {
  assert.equal((await run(["cat"], { stdin: Buffer.from("from buffer") })).stdout, "from buffer");
  const big = randomBytes(3 << 20); // over the window: exercises credit on the host→agent side
  const r = await run(["sha256sum"], {
    stdin: Readable.from([big.subarray(0, 1 << 20), big.subarray(1 << 20)]),
  });
  assert.equal(r.stdout.split(" ")[0], createHash("sha256").update(big).digest("hex"));
  assert.equal((await run(["cat"])).stdout, "");
});

test("exec: a command that cannot start reports an error", async () => {
  const r = await run(["definitely-not-a-command"]);
  assert.equal(r.exit_code, -1);
  assert.equal(r.error, 'exec: "definitely-not-a-command": executable file not found in $PATH');
  assert.equal(r.stdout, "");
});

test("exec: aborting kills the whole process group", async () => {
  const ac = new AbortController();
  let out = "";
  const p = client.exec(
    { argv: ["sh", "-c", "sleep 60 & echo $$ $!; wait"] },
    {
      onStdout: (b) => {
        out += b.toString();
      },
    },
    ac.signal,
  );
  assert.ok(await until(() => out.includes("\n"), 5000), "pids printed");
  const [shPid, sleepPid] = out.trim().split(" ").map(Number) as [number, number];
  assert.equal(procState(sleepPid) !== undefined, true, "sleep runs before the abort");
  ac.abort();
  const r = await p;
  assert.equal(r.signal, "SIGKILL");
  assert.equal(r.exit_code, -1);
  assert.ok(await until(() => procState(shPid) === undefined, 3000), "sh is gone");
  assert.ok(
    await until(() => [undefined, "Z"].includes(procState(sleepPid)), 3000),
    `sleep is gone (state ${procState(sleepPid)})`,
  );
  await assert.rejects(client.exec({ argv: ["true"] }, {}, ac.signal), { name: "AbortError" });
});

test("exec: a throwing output callback cancels the command and rejects with its error", async () => {
  const boom = new Error("consumer failed");
  await assert.rejects(
    client.exec(
      { argv: ["sh", "-c", "echo first; sleep 30"] },
      {
        onStdout: () => {
          throw boom;
        },
      },
    ),
    (e: unknown) => e === boom,
  );
  assert.equal((await client.stats()).open_channels, 0);
});

test("exec: concurrent execs interleave on one connection", async () => {
  const t0 = Date.now();
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      run(["sh", "-c", `for j in 1 2 3; do echo ${i}-$j; sleep 0.1; done`]),
    ),
  );
  results.forEach((r, i) => assert.equal(r.stdout, `${i}-1\n${i}-2\n${i}-3\n`));
  // Serial would take 8 × 0.3 s.
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
});

test("exec: output larger than the window arrives whole", async () => {
  let n = 0;
  const hash = createHash("sha256");
  const r = await client.exec(
    { argv: ["sh", "-c", "head -c 5000000 /dev/zero"] },
    {
      onStdout: (b) => {
        n += b.length;
        hash.update(b);
      },
    },
  );
  assert.equal(r.exit_code, 0);
  assert.equal(n, 5_000_000);
  assert.equal(hash.digest("hex"), createHash("sha256").update(Buffer.alloc(5_000_000)).digest("hex"));
});

test("pty: interactive shell, resize, exit", async (t) => {
  const pty = await client.openPty({ argv: ["sh"], rows: 24, cols: 80 });
  t.after(() => pty.stream.destroy());
  assert.ok(pty.pid > 0);
  let out = "";
  pty.stream.on("data", (b: Buffer) => {
    out += b.toString();
  });
  pty.stream.write("echo h''i\n");
  // The tty echoes the input (h''i), the shell prints hi.
  assert.ok(await until(() => out.includes("hi\r\n"), 5000), `saw hi in ${JSON.stringify(out)}`);
  pty.stream.write("stty size\n");
  assert.ok(await until(() => out.includes("24 80"), 5000), `initial size in ${JSON.stringify(out)}`);
  pty.resize(40, 132);
  await new Promise((r) => setTimeout(r, 50));
  pty.stream.write("stty size; echo $TERM\n");
  assert.ok(await until(() => out.includes("40 132"), 5000), `resized in ${JSON.stringify(out)}`);
  assert.ok(await until(() => out.includes("xterm-256color"), 5000));
  pty.stream.write("exit 4\n");
  assert.deepEqual(await pty.exited, { exit_code: 4 });
});

test("pty: no argv gives a login shell", async (t) => {
  const pty = await client.openPty({ rows: 24, cols: 80 });
  t.after(() => pty.stream.destroy());
  let out = "";
  pty.stream.on("data", (b: Buffer) => {
    out += b.toString();
  });
  pty.stream.write("echo shell=$0; exit 0\n");
  assert.equal((await pty.exited).exit_code, 0);
  assert.match(out, /shell=-?(\/bin\/)?(ba)?sh/);
});

test("pty: signal reaches the foreground job", async (t) => {
  const pty = await client.openPty({ argv: ["sh"], rows: 24, cols: 80 });
  t.after(() => pty.stream.destroy());
  let out = "";
  pty.stream.on("data", (b: Buffer) => {
    out += b.toString();
  });
  pty.stream.write("sleep 30\n");
  await new Promise((r) => setTimeout(r, 300));
  pty.signal("SIGINT");
  // The shell survives (it was not the target, or it ignores SIGINT when interactive) and sees 130.
  pty.stream.write("echo after-$?\n");
  assert.ok(await until(() => out.includes("after-130"), 5000), `interrupted in ${JSON.stringify(out)}`);
  pty.stream.write("exit\n");
  assert.equal((await pty.exited).exit_code, 0);
});

/** A deterministic 100 MiB stream generated in 1 MiB pieces, hashed as it goes. */
function randomStream(total: number, hash: ReturnType<typeof createHash>): Readable {
  let sent = 0;
  return new Readable({
    highWaterMark: 1 << 20,
    read() {
      if (sent >= total) {
        this.push(null);
        return;
      }
      const b = randomBytes(Math.min(1 << 20, total - sent));
      sent += b.length;
      hash.update(b);
      this.push(b);
    },
  });
}

test("files: 100 MiB write and read back byte-exact, in bounded memory", async () => {
  const total = 100 << 20;
  const path = join(tmp, "deep", "er", "big.bin");
  const inHash = createHash("sha256");
  let peak = 0;
  const base = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss - base);
  }, 20);
  try {
    const t0 = performance.now();
    const w = await client.writeFile(path, randomStream(total, inHash), 0o640);
    const wSec = (performance.now() - t0) / 1000;
    assert.equal(w.bytes, total);
    const expected = inHash.digest("hex");
    assert.equal(statSync(path).size, total);
    assert.equal(statSync(path).mode & 0o777, 0o640);
    const onDisk = createHash("sha256");
    for await (const b of createReadStream(path)) onDisk.update(b as Buffer);
    assert.equal(onDisk.digest("hex"), expected);

    const t1 = performance.now();
    const { stat, body } = await client.readFile(path);
    assert.deepEqual(stat, { size: total, mode: 0o640 });
    const outHash = createHash("sha256");
    let n = 0;
    for await (const b of body) {
      n += (b as Buffer).length;
      outHash.update(b as Buffer);
    }
    const rSec = (performance.now() - t1) / 1000;
    assert.equal(n, total);
    assert.equal(outHash.digest("hex"), expected);
    console.log(`# files: write ${(100 / wSec).toFixed(0)} MiB/s, read ${(100 / rSec).toFixed(0)} MiB/s`);
  } finally {
    clearInterval(sampler);
  }
  assert.ok(peak < 100 << 20, `rss grew ${(peak / 1048576).toFixed(0)} MiB`);
  console.log(`# files: rss growth ${(peak / 1048576).toFixed(0)} MiB`);
});

test("files: a reader that does not read holds at most one window", async () => {
  const path = join(tmp, "window.bin");
  await client.writeFile(path, Readable.from([randomBytes(8 << 20)]));
  const { body } = await client.readFile(path);
  await new Promise((r) => setTimeout(r, 400));
  assert.ok(body.readableLength <= INITIAL_WINDOW, `buffered ${body.readableLength}`);
  assert.ok(body.readableLength > 0);
  body.destroy();
  // The cancel closes the channel on the agent.
  let open = -1;
  for (let i = 0; i < 50 && open !== 0; i++) {
    open = (await client.stats()).open_channels;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(open, 0);
});

test("files: ENOENT, EISDIR, relative paths, empty files", async () => {
  await assert.rejects(client.readFile(join(tmp, "nope")), (e: unknown) => {
    assert.ok(e instanceof AgentError);
    assert.equal(e.code, "ENOENT");
    assert.equal(toHostdError(e).code, "file_not_found");
    return true;
  });
  await assert.rejects(client.readFile(tmp), { code: "EISDIR" });
  await assert.rejects(client.readFile("relative/path"), { code: "EINVAL" });
  await assert.rejects(client.writeFile(tmp, Readable.from([Buffer.from("x")])), { code: "EISDIR" });
  const p = join(tmp, "empty");
  assert.deepEqual(await client.writeFile(p, Readable.from([])), { bytes: 0 });
  const { stat, body } = await client.readFile(p);
  assert.equal(stat.size, 0);
  const chunks = await body.toArray();
  assert.equal(chunks.length, 0);
  // Overwrite is atomic and leaves no temp files behind.
  await client.writeFile(p, Readable.from([Buffer.from("second")]));
  assert.equal(readFileSync(p, "utf8"), "second");
  assert.deepEqual(
    execFileSync("ls", ["-A", tmp])
      .toString()
      .split("\n")
      .filter((n) => n.includes(".createos-")),
    [],
  );
});

test("tcp: echo through the guest with half-close both ways", async () => {
  const server = net.createServer({ allowHalfOpen: true }, (c) => {
    const parts: Buffer[] = [];
    c.on("data", (b: Buffer) => parts.push(b));
    c.on("end", () => {
      // Only after the client half-closed: reply, then close our side.
      c.end(Buffer.concat(parts).toString().toUpperCase());
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const s = await client.connectTcp(port);
    s.end("hello through the agent");
    const got = Buffer.concat(await s.toArray()).toString();
    assert.equal(got, "HELLO THROUGH THE AGENT");
    await assert.rejects(client.connectTcp(1), { code: "ECONNREFUSED" });
  } finally {
    server.close();
  }
});

test("self-signal HTTP: 202, then the event reaches the host", async () => {
  const events: AgentEvent[] = [];
  const onEvent = (e: AgentEvent) => events.push(e);
  client.on("event", onEvent);
  try {
    await client.stats(); // connected
    const res = await fetch(`http://${selfAddr}/self/pause?reason=${"r".repeat(200)}`, { method: "POST" });
    assert.equal(res.status, 202);
    const body = (await res.json()) as { accepted: boolean; action: string };
    assert.equal(body.action, "pause");
    assert.ok(await until(() => events.some((e) => e.event === "self"), 3000));
    const ev = events.find((e) => e.event === "self") as { action: string; reason: string };
    assert.equal(ev.action, "pause");
    assert.equal(ev.reason, "r".repeat(128));
    assert.equal((await fetch(`http://${selfAddr}/self/pause`)).status, 405);
    assert.equal((await fetch(`http://${selfAddr}/self/nope`, { method: "POST" })).status, 404);
    const del = await fetch(`http://${selfAddr}/self/delete`, { method: "POST" });
    assert.equal(del.status, 202);
    assert.ok(await until(() => events.some((e) => e.event === "self" && e.action === "delete"), 3000));
  } finally {
    client.off("event", onEvent);
  }
});

test("self-signal while no host is connected is delivered after the next hello", async () => {
  client.close();
  await new Promise((r) => setTimeout(r, 100)); // the agent noticed the close
  const res = await fetch(`http://${selfAddr}/self/delete?reason=offline`, { method: "POST" });
  assert.equal(res.status, 202);
  await new Promise((r) => setTimeout(r, 100));
  const got: AgentEvent[] = [];
  const onSelf = (e: AgentEvent) => got.push(e);
  client.on("self", onSelf);
  try {
    await client.hello();
    assert.ok(await until(() => got.length > 0, 3000), "event delivered");
    assert.deepEqual(
      got.map((e) => `${e.action}:${e.reason}`),
      ["delete:offline"],
    );
  } finally {
    client.off("self", onSelf);
  }
});

test("reconnect: a new connection drops the old channels, and everything works again", async () => {
  const before = await client.hello();
  const pending = client.exec({ argv: ["sleep", "30"] });
  const pendingErr = pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await client.stats()).open_channels, 1);
  // Another host connection replaces this one (as after a resume or a hostd restart).
  const other = new AgentClient(sock);
  const h = await other.hello({ timeoutMs: 5000 });
  assert.equal(h.boot_id, before.boot_id);
  const err = await pendingErr;
  assert.ok(err instanceof HostdError && err.code === "agent_unreachable", String(err));
  assert.equal((await other.stats()).open_channels, 0);
  assert.equal(
    (await run(["echo", "old client reconnects on demand"])).stdout,
    "old client reconnects on demand\n",
  );
  // The old client's reconnect replaced `other` in turn: the agent closed its connection.
  assert.ok(await until(() => !other.connected, 3000));
  other.close();
  // And an explicit close followed by an operation reconnects too.
  client.close();
  assert.equal((await run(["echo", "again"])).stdout, "again\n");
});

test("rpc: sync, quiesce, resize_fs, stats in listen mode", async () => {
  const s = await client.sync({ time_ns: BigInt(Date.now() + 5000) * 1_000_000n });
  assert.ok(s.skew_ms > 4000 && s.skew_ms < 6000, `skew ${s.skew_ms}`);
  const st = await client.stats();
  assert.ok(st.mem_available_kib > 0);
  assert.equal(typeof st.resyncs, "number");
  assert.deepEqual(await client.resizeFs(), { size_bytes: 0 });
});

test("quiesce holds channel output until thaw; replies still flow; hello lifts it too", async () => {
  let out = "";
  const p = client.exec(
    { argv: ["sh", "-c", "sleep 0.3; echo late"] },
    {
      onStdout: (b) => {
        out += b.toString();
      },
    },
  );
  await new Promise((r) => setTimeout(r, 100)); // started
  await client.quiesce();
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(out, "", "no output while quiesced");
  assert.equal((await client.stats()).open_channels, 1, "replies flow while quiesced");
  await client.thaw();
  const r = await p;
  assert.equal(out, "late\n");
  assert.equal(r.exit_code, 0);
  await client.quiesce();
  await client.hello();
  assert.equal((await run(["echo", "after quiesce"])).stdout, "after quiesce\n");
});

test("exec round trip", async () => {
  const times: number[] = [];
  const spawns: number[] = [];
  const walls: number[] = [];
  for (let i = 0; i < 50; i++) {
    const r = await client.exec({ argv: ["true"] });
    times.push(r.exec_ms);
    spawns.push((r.spawn_us ?? 0) / 1000);
    walls.push((r.wall_us ?? 0) / 1000);
  }
  for (const a of [times, spawns, walls]) a.sort((x, y) => x - y);
  console.log(
    `# exec true: round trip p50 ${times[25]!.toFixed(2)} ms p95 ${times[47]!.toFixed(2)} ms, agent wall p50 ${walls[25]!.toFixed(2)} ms, spawn p50 ${spawns[25]!.toFixed(2)} ms`,
  );
  assert.ok(times[25]! < 500);
});

test("the agent is still healthy and idle", async () => {
  assert.ok(existsSync(sock));
  const st = await client.stats();
  assert.equal(st.open_channels, 0);
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, "utf8"))?.[1]);
  console.log(`# agent RSS after the suite: ${(rss / 1024).toFixed(1)} MiB`);
});
