/** Guest files against the real agent in --listen mode: large, windowed, errors, atomic overwrite. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { HostdError, INITIAL_WINDOW } from "@createos-sandbox/protocol";
import { AgentError, toHostdError } from "./client.js";
import { assertIdle, useAgent } from "./testagent.js";

const ta = useAgent();
const { client, tmp } = ta;

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

test("files: a read failing after the stat fails the body, not a shorter file", async () => {
  // The agent's own memory at offset 0 is unmapped: open and stat succeed, the first read is EIO.
  const { body } = await client.readFile("/proc/self/mem");
  await assert.rejects(body.toArray(), (e: unknown) => {
    assert.ok(e instanceof HostdError, String(e));
    assert.match(e.message, /input\/output error/);
    return true;
  });
});

test("the agent is still healthy and idle", () => assertIdle(ta));
