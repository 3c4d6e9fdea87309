/**
 * Helpers of the conformance suite: guest-side programs, a long-running exec as a handle, waiting, and
 * checking a rejection's HostdError code. They only use the HostDaemon interface, so they work the same
 * on every implementation.
 */
import assert from "node:assert/strict";
import type { ExecResult, HostDaemon, HostdErrorCode } from "@createos-sandbox/protocol";
import { HostdError } from "@createos-sandbox/protocol";
import { sh, sleep } from "../testutil.js";

/**
 * A one-connection TCP server on 127.0.0.1 in the guest, run as `python3 -c TCP_SERVER MODE PORT [N]`.
 * It prints `ready` once listening, so the test never races the bind.
 *   echo-after-eof   reads until the host half-closes, then answers the upper-cased bytes + `|eof-seen`
 *   greet-then-read  sends `greeting`, half-closes its side, then prints everything the host still sends
 *   flood N          sends N bytes (256 KiB chunks, each numbered), recording after every chunk how many
 *                    bytes the kernel took in /tmp/flood.sent; prints their sha256 at the end
 */
export const TCP_SERVER = `
import hashlib, os, socket, sys
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
def recv_all():
    data = b""
    while True:
        b = c.recv(65536)
        if not b:
            return data
        data += b
if mode == "echo-after-eof":
    c.sendall(recv_all().upper() + b"|eof-seen")
elif mode == "greet-then-read":
    c.sendall(b"greeting")
    c.shutdown(socket.SHUT_WR)
    print(recv_all().decode(), flush=True)
elif mode == "flood":
    total, chunk, sent = int(sys.argv[3]), 256 * 1024, 0
    base, h = os.urandom(chunk), hashlib.sha256()
    while sent < total:
        b = (sent // chunk).to_bytes(8, "big") + base[8:]
        c.sendall(b)
        h.update(b)
        sent += len(b)
        with open("/tmp/flood.tmp", "w") as f:
            f.write(str(sent))
        os.replace("/tmp/flood.tmp", "/tmp/flood.sent")
    print(h.hexdigest(), flush=True)
c.close()
`;

/** A guest command left running: resolves `ready` once its stdout contains `marker`. */
export interface GuestProcess {
  ready: Promise<void>;
  done: Promise<ExecResult>;
  stdout(): string;
  stderr(): string;
}

export function startGuest(
  d: HostDaemon,
  id: string,
  argv: string[],
  marker = "ready\n",
  signal?: AbortSignal,
): GuestProcess {
  let out = "";
  let err = "";
  let markReady!: () => void;
  const ready = new Promise<void>((r) => {
    markReady = r;
  });
  const done = d.exec(
    id,
    { argv },
    {
      onStdout: (c) => {
        out += c.toString();
        if (out.includes(marker)) markReady();
      },
      onStderr: (c) => {
        err += c.toString();
      },
    },
    signal,
  );
  // Exiting before the marker is a failure of `ready`, not a hang.
  const readyOrExit = Promise.race([
    ready,
    done.then((r) => {
      if (!out.includes(marker))
        throw new Error(`${argv[0]} exited (${JSON.stringify(r)}) before printing ${marker}: ${err}`);
    }),
  ]);
  done.catch(() => {});
  readyOrExit.catch(() => {});
  return { ready: readyOrExit, done, stdout: () => out, stderr: () => err };
}

/** Polls `cond` until it holds; fails with `what` after `ms`. */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  ms = 10_000,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** Rejects `within` ms after the call, so one hung promise fails its assertion instead of the run. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => {
    t = setTimeout(() => rej(new Error(`${what}: not settled after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** The promise rejects with a HostdError of exactly `code`. */
export async function rejectsWith(p: Promise<unknown>, code: HostdErrorCode, what: string): Promise<void> {
  let err: unknown;
  let resolved = false;
  try {
    await p;
    resolved = true;
  } catch (e) {
    err = e;
  }
  assert.ok(!resolved, `${what}: resolved, expected a HostdError ${code}`);
  assert.ok(err instanceof HostdError, `${what}: rejected with ${String(err)}, not a HostdError`);
  assert.equal(err.code, code, `${what}: got ${err.code} (${err.message}), expected ${code}`);
}

/** True when no process with this pid exists in the guest any more (reaped, not a zombie). */
export async function guestPidGone(d: HostDaemon, id: string, pid: number): Promise<boolean> {
  return (await sh(d, id, `test -e /proc/${pid} && echo alive || echo gone`)).trim() === "gone";
}
