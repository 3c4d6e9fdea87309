/**
 * Backpressure end to end on a real VM, through the host daemon's API: four streamed execs of
 * `cat /dev/zero` and a download of a 4 GiB file whose consumers take nothing for 20 s keep this
 * process's RSS within a stated bound, and closing the consumers ends the commands and the file in the guest.
 *
 *   npx tsc -b packages/hostd && flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/backpressure.vm.test.js
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { rmSync } from "node:fs";
import { Writable } from "node:stream";
import { after, before, test } from "node:test";
import { INITIAL_WINDOW } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "./daemon.js";
import { TEST_IMAGE, openOpts, sh, sleep, spec, tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("backpressure");
const MiB = 1024 * 1024;
/** How long the consumers take nothing, and the bound on this process's RSS growth meanwhile. */
const STALL_MS = 20_000;
const RSS_BOUND = 64 * MiB;
const s = spec();
let d: LocalHostDaemon;

before(async () => {
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), warmPool: 0 });
  await d.ensureImage(TEST_IMAGE);
  await d.create(s);
});

after(async () => {
  for (const v of await d.list()) await d.destroy(v.sandbox_id);
  await d.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A client that stopped reading: its writes are never done, so write() soon answers false. */
function stalledClient(): Writable {
  return new Writable({ highWaterMark: 64 * 1024, write() {} });
}

test("stalled consumers of four `cat /dev/zero` execs and a 4 GiB download hold the host's memory", async () => {
  await sh(d, s.sandbox_id, "truncate -s 4G /root/big");
  const ac = new AbortController();
  const delivered = [0, 0, 0, 0];
  // As the control plane writes an exec stream: write, and wait for 'drain' when the client is behind.
  const execs = delivered.map((_, i) => {
    const client = stalledClient();
    return d.exec(
      s.sandbox_id,
      { argv: ["cat", "/dev/zero"] },
      {
        onStdout: (c) => {
          delivered[i]! += c.length;
          return client.write(c) ? undefined : once(client, "drain");
        },
      },
      ac.signal,
    );
  });
  const { stat, body } = await d.readFile(s.sandbox_id, "/root/big");
  assert.equal(stat.size, 4 * 1024 * MiB);
  const downloader = stalledClient();
  body.pipe(downloader);
  await sleep(1000);
  global.gc?.();
  const base = process.memoryUsage().rss;
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss - base);
  }, 100);
  const before = [...delivered];
  await sleep(STALL_MS);
  clearInterval(sampler);
  console.log(
    `# ${STALL_MS / 1000} s stalled: rss ${(base / MiB).toFixed(0)} MiB at the start, peak growth ${(peak / MiB).toFixed(1)} MiB (bound ${RSS_BOUND / MiB}); per exec ${delivered.map((n) => (n / MiB).toFixed(2)).join(", ")} MiB delivered; download buffered ${(body.readableLength / MiB).toFixed(2)} MiB`,
  );
  assert.ok(peak < RSS_BOUND, `rss grew ${(peak / MiB).toFixed(0)} MiB`);
  for (const [i, n] of delivered.entries()) {
    assert.ok(n > 0, `exec ${i} started`);
    // One window, plus what a consumer's write() accepted before it said 'wait'.
    assert.ok(n <= INITIAL_WINDOW + 256 * 1024, `exec ${i}: ${n} bytes delivered to a stalled client`);
    assert.equal(n, before[i], `exec ${i}: nothing more while the client was stalled`);
  }
  assert.ok(body.readableLength <= INITIAL_WINDOW, `download buffered ${body.readableLength}`);

  // What the guest holds: running cats, and the agent's (PID 1's) descriptors of the file.
  const inGuest = async () =>
    (
      await sh(
        d,
        s.sandbox_id,
        "echo $(grep -x cat /proc/[0-9]*/comm 2>/dev/null | wc -l) $(ls -l /proc/1/fd | grep -c /root/big)",
      )
    ).trim();
  assert.equal(await inGuest(), "4 1");
  // Closing the consumers: the commands are killed and the file closed in the guest.
  ac.abort();
  for (const r of await Promise.all(execs)) assert.equal(r.signal, "SIGKILL");
  body.destroy();
  let left = "";
  for (let i = 0; i < 50 && left !== "0 0"; i++) {
    if (i > 0) await sleep(200);
    left = await inGuest();
  }
  assert.equal(left, "0 0", "no cat left, and the agent no longer holds the file");
});
