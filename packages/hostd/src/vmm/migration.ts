/**
 * The device-state stream of a snapshot, carried over a Unix socket in the VM dir instead of QEMU's
 * `exec:cat …` transport: that one runs `/bin/sh` inside QEMU, which its seccomp filter (`spawn=deny`)
 * and its jail (no shell, no write access to the snapshot dir) rule out. The host daemon holds the state
 * file; QEMU only ever sees the socket. The stream is small (device and vCPU state, ~50 KB, since RAM
 * stays in the shared RAM file), so the copy through this process costs nothing measurable.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { lchown, rm, stat } from "node:fs/promises";
import { type Server, type Socket, createServer } from "node:net";
import { pipeline } from "node:stream/promises";
import { HostdError } from "@createos-sandbox/protocol";
import { connectUnix } from "../sys/nofollow.js";

/**
 * Listens on `sock` for QEMU's `migrate unix:…` and writes what it sends to `statePath`. `listening`
 * resolves once QEMU may connect; `written` once the whole stream is in the file (QEMU closed its end).
 */
export async function receiveState(
  sock: string,
  statePath: string,
  owner?: { uid: number; gid: number },
): Promise<{ written: Promise<void>; close: () => Promise<void> }> {
  await rm(sock, { force: true });
  let server: Server | undefined;
  const written = new Promise<void>((resolve, reject) => {
    server = createServer({ allowHalfOpen: false }, (conn) => {
      server?.close();
      pipeline(conn, createWriteStream(statePath, { mode: 0o600 })).then(resolve, reject);
    });
    server.once("error", reject);
  });
  written.catch(() => undefined);
  const srv = server as unknown as Server;
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(sock, () => resolve());
  });
  // A jailed QEMU connects as its own uid: the socket must be its to connect to. lchown: the name is in
  // QEMU's dir, and chown would follow a link it put there meanwhile to whatever host file it names.
  if (owner) await lchown(sock, owner.uid, owner.gid);
  return {
    written,
    close: async () => {
      srv.close();
      await rm(sock, { force: true });
    },
  };
}

/** Connects to the socket QEMU listens on after `migrate-incoming unix:…` and sends it `statePath`. */
export async function sendState(sock: string, statePath: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const conn = await new Promise<Socket>((resolve, reject) => {
        // QEMU's socket, in its dir: never connected to through a link (sys/nofollow.ts).
        const s = connectUnix(sock);
        s.once("connect", () => {
          s.removeAllListeners("error");
          resolve(s);
        });
        s.once("error", reject);
      });
      const size = (await stat(statePath)).size;
      try {
        await pipeline(createReadStream(statePath), conn);
      } catch (e) {
        // QEMU closes the socket as soon as it has read the whole stream, which can beat our end's
        // 'finish': that is a delivered state, not a failure (QEMU's own migration status says if the
        // restore worked). A close before every byte was handed over is still an error.
        const early = (e as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE";
        if (!(early && conn.bytesWritten >= size)) throw e;
      }
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== "ENOENT" && code !== "ECONNREFUSED") || Date.now() > deadline)
        throw new HostdError("internal", `cannot send the VM state to ${sock}: ${String(e)}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}
