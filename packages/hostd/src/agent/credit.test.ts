/**
 * Backpressure and caps against the real agent in --listen mode: the guest gets credit for output only
 * once the consumer took it (exec callbacks, PTY streams), and one VM's open channels and buffered exec
 * output are capped with HostdError("busy").
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { HostdError, INITIAL_WINDOW } from "@createos-sandbox/protocol";
import { AgentClient } from "./client.js";
import { assertIdle, until, useAgent } from "./testagent.js";

const ta = useAgent();
const { client } = ta;
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isBusy = (e: unknown) => e instanceof HostdError && e.code === "busy";

test("exec: a consumer whose promise is pending gets one window, then everything once it takes it", async () => {
  const total = 16 << 20;
  let got = 0;
  let open!: () => void;
  const gate = new Promise<void>((r) => {
    open = r;
  });
  let gated = true;
  const run = client.exec(
    { argv: ["head", "-c", String(total), "/dev/zero"] },
    {
      onStdout: (c) => {
        got += c.length;
        return gated ? gate : undefined;
      },
    },
  );
  await wait(600);
  // The agent may send one window before any credit comes back, and no more.
  assert.ok(got > 0 && got <= INITIAL_WINDOW, `delivered ${got} while paused`);
  const paused = got;
  await wait(300);
  assert.equal(got, paused, "nothing more arrives while the consumer holds the output");
  gated = false;
  open();
  const r = await run;
  assert.equal(r.exit_code, 0);
  assert.equal(got, total);
});

test("exec: a consumer promise that rejects cancels the command and is the exec's error", async () => {
  const run = client.exec(
    { argv: ["sh", "-c", "while :; do echo y; done"] },
    { onStdout: () => Promise.reject(new Error("client gone")) },
  );
  await assert.rejects(run, /client gone/);
});

test("pty: output held to one window while the stream is not read, then all of it", async () => {
  const total = 8 << 20;
  const pty = await client.openPty({ argv: ["head", "-c", String(total), "/dev/zero"], rows: 24, cols: 80 });
  await wait(600);
  assert.ok(
    pty.stream.readableLength > 0 && pty.stream.readableLength <= INITIAL_WINDOW,
    `buffered ${pty.stream.readableLength}`,
  );
  let got = 0;
  pty.stream.on("data", (b: Buffer) => {
    got += b.length;
  });
  assert.ok(await until(() => got >= total, 20_000), `read ${got}`);
  assert.equal((await pty.exited).exit_code, 0);
  pty.stream.destroy();
});

test("caps: open channels past maxChannels are refused with busy, and free again when they end", async () => {
  const c = new AgentClient(ta.sock, { maxChannels: 2 });
  const ac = new AbortController();
  try {
    const running = [1, 2].map(() => c.exec({ argv: ["sleep", "30"] }, {}, ac.signal));
    await wait(200);
    await assert.rejects(
      c.exec({ argv: ["true"] }),
      (e: unknown) => isBusy(e) && /2 streams/.test(String(e)),
    );
    ac.abort();
    for (const r of await Promise.all(running)) assert.equal(r.signal, "SIGKILL");
    assert.equal((await c.exec({ argv: ["true"] })).exit_code, 0);
  } finally {
    c.close();
  }
});

test("caps: buffered exec output is cut at bufferBytes and counted against the VM's budget", async () => {
  const c = new AgentClient(ta.sock, { maxBufferedBytes: 1 << 20 });
  try {
    // Cut: a buffered exec is given at most its bufferBytes, the command still runs to its end.
    let got = 0;
    const cut = await c.exec(
      { argv: ["head", "-c", String(4 << 20), "/dev/zero"], bufferBytes: 300_000 },
      {
        onStdout: (b) => {
          got += b.length;
        },
      },
    );
    assert.equal(cut.exit_code, 0);
    assert.ok(got > 0 && got <= 300_000, `kept ${got}`);
    // One exec holding the whole budget until it ends: another buffered one is refused at once, one
    // that takes output past the budget is cancelled; an unbuffered one is not counted.
    let held = 0;
    const holder = c.exec(
      { argv: ["sh", "-c", "head -c 1048576 /dev/zero; sleep 3"], bufferBytes: 1 << 20 },
      {
        onStdout: (b) => {
          held += b.length;
        },
      },
    );
    assert.ok(await until(() => held === 1 << 20, 5000), `holder got ${held}`);
    await assert.rejects(c.exec({ argv: ["true"], bufferBytes: 10 }), isBusy);
    assert.equal((await c.exec({ argv: ["head", "-c", "100000", "/dev/zero"] })).exit_code, 0);
    assert.equal((await holder).exit_code, 0);
    // Budget released: two that together overrun it — the second to cross the cap is cancelled.
    const a = c.exec({ argv: ["sh", "-c", "head -c 786432 /dev/zero; sleep 2"], bufferBytes: 1 << 20 });
    await wait(500);
    const b = c.exec({ argv: ["sh", "-c", "head -c 786432 /dev/zero; sleep 30"], bufferBytes: 1 << 20 });
    await assert.rejects(b, isBusy);
    assert.equal((await a).exit_code, 0);
  } finally {
    c.close();
  }
});

test("credit: no channel left open", () => assertIdle(ta));
