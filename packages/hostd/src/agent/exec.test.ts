/** exec against the real agent in --listen mode: output, env, cwd, stdin, abort, concurrency. */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { assertIdle, until, useAgent } from "./testagent.js";

const ta = useAgent();
const { client, tmp, run } = ta;

function procState(pid: number): string | undefined {
  try {
    // Field 3 of /proc/PID/stat, after the parenthesised command name.
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0];
  } catch {
    return undefined;
  }
}

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
  // The agent sends EXIT before it drops the channel from its table: on a busy machine a stats call can
  // land in between, so the channel must be gone within a bound, not at the same instant.
  let open = (await client.stats()).open_channels;
  for (let i = 0; i < 100 && open !== 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    open = (await client.stats()).open_channels;
  }
  assert.equal(open, 0);
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

test("the agent is still healthy and idle", () => assertIdle(ta));
