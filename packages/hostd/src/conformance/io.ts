/**
 * The guest I/O checks of the conformance suite (exec, files, PTY, tunnels, backpressure), one function
 * per test, each against a running VM `id`. suite.ts registers them; they only use the HostDaemon interface.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { type Duplex, Readable } from "node:stream";
import type { HostDaemon } from "@createos-sandbox/protocol";
import { bufferStream, drain, run, sh, sha256, sleep } from "../testutil.js";
import {
  type GuestProcess,
  TCP_SERVER,
  guestPidGone,
  rejectsWith,
  startGuest,
  waitFor,
  within,
} from "./guest.js";

/** Every byte value, then random bytes: a blob that any text or line-ending mangling would change. */
function binaryBlob(randomLen: number): Buffer {
  return Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(randomLen)]);
}

export async function checkExec(d: HostDaemon, id: string): Promise<void> {
  const mixed = await run(d, id, [
    "sh",
    "-c",
    "printf out1; printf err1 >&2; printf out2; printf err2 >&2; exit 3",
  ]);
  assert.deepEqual(mixed, { code: 3, stdout: "out1out2", stderr: "err1err2" });
  assert.equal((await run(d, id, ["sh", "-c", "exit 255"])).code, 255);
  const plain = await d.exec(id, { argv: ["true"] });
  assert.equal(plain.exit_code, 0);
  assert.equal(plain.error, undefined);
  assert.equal(plain.signal, undefined);
  assert.ok(plain.exec_ms > 0, `exec_ms ${plain.exec_ms}`);

  // Per-exec env is merged over the sandbox envs (and wins), and does not stick to later execs.
  const show = ["sh", "-c", 'printf "%s|%s|%s" "$CONF_ENV" "$CONF_OVER" "$CONF_EXEC"'];
  const withEnv = await run(d, id, show, { env: { CONF_OVER: "exec", CONF_EXEC: "only here" } });
  assert.equal(withEnv.stdout, "sandbox value|exec|only here");
  assert.equal((await run(d, id, show)).stdout, "sandbox value|sandbox|");
  assert.equal((await run(d, id, ["pwd"], { cwd: "/tmp" })).stdout, "/tmp\n");
  assert.equal((await run(d, id, ["pwd"], { cwd: "/usr/bin" })).stdout, "/usr/bin\n");
}

export async function checkStdin(d: HostDaemon, id: string): Promise<void> {
  const small = binaryBlob(300_000);
  const viaBuffer = await run(d, id, ["sha256sum"], { stdin: small });
  assert.equal(viaBuffer.stdout.split(" ")[0], sha256(small), "stdin given as a Buffer");
  // Larger than one flow-control window, in odd-sized chunks.
  const big = binaryBlob(3 * 1024 * 1024 + 17);
  const viaStream = await run(d, id, ["sha256sum"], { stdin: bufferStream(big, 100_003) });
  assert.equal(viaStream.stdout.split(" ")[0], sha256(big), "stdin given as a Readable");
  // No stdin: /dev/null, so a reader sees end-of-file at once instead of hanging.
  const none = await within(
    run(d, id, ["sh", "-c", "readlink /proc/$$/fd/0; cat"]),
    30_000,
    "exec without stdin",
  );
  assert.deepEqual(none, { code: 0, stdout: "/dev/null\n", stderr: "" });
}

export async function checkStartFailure(d: HostDaemon, id: string): Promise<void> {
  const missing = await d.exec(id, { argv: ["conf-no-such-program"] });
  assert.equal(missing.exit_code, -1);
  assert.ok(typeof missing.error === "string" && missing.error.length > 0, `error: ${missing.error}`);
  const badCwd = await d.exec(id, { argv: ["true"], cwd: "/conf/no/such/dir" });
  assert.equal(badCwd.exit_code, -1);
  assert.ok(typeof badCwd.error === "string" && badCwd.error.length > 0, `error: ${badCwd.error}`);
}

export async function checkCancel(d: HostDaemon, id: string): Promise<void> {
  const ac = new AbortController();
  let abortedAt = 0;
  // A background sleep in the same process group, then the shell becomes the foreground sleep.
  const p = startGuest(d, id, ["sh", "-c", "sleep 1007 & echo $! $$; exec sleep 1008"], "\n", ac.signal);
  await within(p.ready, 30_000, "the sleeps to start");
  abortedAt = Date.now();
  ac.abort();
  const r = await within(p.done, 10_000, "exec after its signal was aborted");
  const took = Date.now() - abortedAt;
  assert.ok(took < 5000, `exec resolved ${took} ms after the abort`);
  assert.notEqual(r.exit_code, 0, `a killed exec reported ${JSON.stringify(r)}`);
  const [bg, fg] = p.stdout().trim().split(" ").map(Number);
  assert.ok(bg && fg, `pids: ${p.stdout()}`);
  await waitFor(
    "the aborted exec's process group to be gone",
    async () => (await guestPidGone(d, id, bg)) && (await guestPidGone(d, id, fg)),
    10_000,
  );
}

export async function checkFiles(d: HostDaemon, id: string): Promise<void> {
  const dir = `/root/conf-${randomBytes(4).toString("hex")}`;
  const path = `${dir}/a/b/blob.bin`;
  const blob = binaryBlob(2 * 1024 * 1024 + 5);
  const w = await d.writeFile(id, path, bufferStream(blob, 100_003), 0o750);
  assert.equal(w.bytes, blob.length);
  const r = await d.readFile(id, path);
  assert.equal(r.stat.size, blob.length);
  assert.equal((r.stat.mode & 0o7777).toString(8), "750");
  const back = await drain(r.body);
  assert.equal(back.length, blob.length);
  assert.ok(back.equals(blob), "read back differs from what was written");
  assert.equal((await sh(d, id, `stat -c %a ${path}`)).trim(), "750");
  assert.equal((await sh(d, id, `sha256sum < ${path}`)).split(" ")[0], sha256(blob));
  // Overwriting replaces the whole file.
  await d.writeFile(id, path, Readable.from([Buffer.from("second")]));
  assert.equal((await drain((await d.readFile(id, path)).body)).toString(), "second");

  await rejectsWith(d.readFile(id, `${dir}/missing`), "file_not_found", "reading a missing file");
  await rejectsWith(d.readFile(id, `${path}/below-a-file`), "file_not_found", "reading below a file");
  await rejectsWith(d.readFile(id, "relative/path"), "bad_request", "reading a relative path");
  await rejectsWith(
    d.writeFile(id, "relative/path", Readable.from([Buffer.from("x")])),
    "bad_request",
    "writing a relative path",
  );
  await sh(d, id, `rm -rf ${dir}`);
}

export async function checkPty(d: HostDaemon, id: string): Promise<void> {
  const pty = await d.openPty(id, { rows: 24, cols: 80 });
  let out = "";
  pty.stream.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const expect = (what: string, re: RegExp) =>
    waitFor(`${what}; PTY output so far: ${JSON.stringify(out)}`, () => re.test(out), 20_000);
  // Each command prints something its echoed input does not contain, so only real output matches.
  pty.stream.write("stty size; echo m$((40+2))\n");
  await expect("the initial size", /24 80\r?\nm42/);
  pty.resize(40, 100);
  pty.stream.write("stty size; echo m$((50+3))\n");
  await expect("the size after resize", /40 100\r?\nm53/);
  // SIGINT goes to the foreground job, not to the shell: the shell then reports 130 (128 + SIGINT).
  pty.stream.write("sh -c 'echo s$((60+4)); exec sleep 1009'\n");
  await expect("the foreground sleep", /s64/);
  pty.signal("SIGINT");
  pty.stream.write("echo rc=$((0+$?))\n");
  await expect("the interrupted sleep's status", /rc=130/);
  pty.stream.write("exit 7\n");
  try {
    const exit = await within(pty.exited, 20_000, "PTY exit");
    assert.equal(exit.exit_code, 7);
    assert.equal(exit.signal, undefined);
  } finally {
    pty.stream.destroy();
  }
}

export async function checkTunnel(d: HostDaemon, id: string): Promise<void> {
  // The host half-closes first; the guest answers only after it saw that EOF.
  const echo = startGuest(d, id, ["python3", "-c", TCP_SERVER, "echo-after-eof", "9101"]);
  await within(echo.ready, 30_000, "guest server");
  const a = await d.connectTcp(id, 9101);
  a.write("hello ");
  a.end("tunnel");
  assert.equal((await within(drain(a), 20_000, "echo reply")).toString(), "HELLO TUNNEL|eof-seen");
  assert.equal((await within(echo.done, 20_000, "echo server exit")).exit_code, 0, echo.stderr());

  // The guest half-closes first; the host still writes after it read that EOF.
  const greet = startGuest(d, id, ["python3", "-c", TCP_SERVER, "greet-then-read", "9102"]);
  await within(greet.ready, 30_000, "guest server");
  const b = await d.connectTcp(id, 9102);
  let got = "";
  b.on("data", (c: Buffer) => {
    got += c.toString();
  });
  await within(new Promise((r) => b.once("end", r)), 20_000, "the guest's EOF");
  assert.equal(got, "greeting");
  b.end("written after the guest's EOF");
  const res = await within(greet.done, 20_000, "greet server exit");
  assert.equal(res.exit_code, 0, greet.stderr());
  assert.equal(greet.stdout(), "ready\nwritten after the guest's EOF\n");
}

const FLOOD_BYTES = 64 * 1024 * 1024;

export async function checkBackpressure(d: HostDaemon, id: string): Promise<void> {
  const srv = startGuest(d, id, ["python3", "-c", TCP_SERVER, "flood", "9103", String(FLOOD_BYTES)]);
  await within(srv.ready, 30_000, "guest flood server");
  const s = await d.connectTcp(id, 9103);
  try {
    await flooded(d, id, srv, s);
  } finally {
    s.destroy();
  }
}

async function flooded(d: HostDaemon, id: string, srv: GuestProcess, s: Duplex): Promise<void> {
  s.end(); // the server never reads; only the guest → host direction is under test
  const sent = async () => Number((await sh(d, id, "cat /tmp/flood.sent 2>/dev/null || echo 0")).trim());
  // Not reading: the writer must stall once the bounded buffers along the way are full.
  await sleep(2000);
  let last = await sent();
  let stalled = false;
  for (let i = 0; i < 20 && !stalled; i++) {
    await sleep(1000);
    const now = await sent();
    stalled = now === last;
    last = now;
  }
  assert.ok(stalled, `the guest writer never stalled: ${last} bytes out and counting`);
  assert.ok(
    last < FLOOD_BYTES / 4,
    `the guest wrote ${last} of ${FLOOD_BYTES} bytes to a tunnel nobody read: nothing pushed back`,
  );
  // Any way of reading must do: this one is the async iterator (stream.read()), not 'data' events.
  const body = await within(drain(s), 90_000, "reading the flood");
  const res = await within(srv.done, 30_000, "flood server exit");
  assert.equal(res.exit_code, 0, srv.stderr());
  assert.equal(body.length, FLOOD_BYTES);
  assert.equal(sha256(body), srv.stdout().split("\n")[1], "the flood arrived altered");
}
