/** Helpers for tests that run real VMs: a server with the engine, readiness wait, raw upgrade sockets. */
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { type Socket, connect } from "node:net";
import { type Logged, type ServerProc, call, spawnLogged, startProc, waitStarted } from "./helpers.js";

/** Images may need building on a fresh machine: wait generously for /readyz. */
export async function startEngineServer(
  env: Record<string, string> = {},
  dataDir?: string,
  args: string[] = [],
): Promise<ServerProc> {
  const s = await startProc({ engine: true, env, args, ...(dataDir ? { dataDir } : {}) });
  await waitReady(s);
  return s;
}

export interface HostdProc extends Logged {
  url: string;
  port: number;
}

/** `createos-sandbox hostd` as its own process; resolves once it logs the URL it listens on. */
export async function startHostd(opts: {
  dataDir: string;
  id: string;
  token: string;
  listen?: string;
  /** More settings of its own (a VXLAN port per daemon, say). */
  env?: Record<string, string>;
}): Promise<HostdProc> {
  const args = ["hostd", "--listen", opts.listen ?? "127.0.0.1:0", "--data-dir", opts.dataDir];
  const env = {
    ...(process.env as Record<string, string>),
    CREATEOS_SANDBOX_HOSTD_TOKEN: opts.token,
    ...opts.env,
  };
  const p = spawnLogged([...args, "--id", opts.id], env);
  const line = await waitStarted(p, /"msg":"hostd listening"/);
  const url = /"url":"([^"]+)"/.exec(line)?.[1];
  if (!url) throw new Error(`no url in: ${line}`);
  return { url, port: Number(new URL(url).port), ...p };
}

/** Pids of QEMU processes whose command line names one of `dirs` (their pidfiles live there). */
export function qemuPids(dirs: string[]): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ");
    } catch {
      continue; // exited while we looked
    }
    if (cmd.includes("qemu-system") && dirs.some((d) => cmd.includes(d))) out.push(Number(name));
  }
  return out.sort((a, b) => a - b);
}

export async function waitReady(s: ServerProc, timeoutMs = 20 * 60_000): Promise<void> {
  const t0 = Date.now();
  let last = "";
  while (Date.now() - t0 < timeoutMs) {
    const r = await call(s.url, "GET", "/readyz").catch(() => undefined);
    if (r?.status === 200 && r.json?.data?.ready === true) return;
    last = r?.text ?? "no answer";
    if (s.proc.exitCode !== null) throw new Error(`server exited: ${s.logs.slice(-20).join("\n")}`);
    await new Promise((res) => setTimeout(res, 500));
  }
  throw new Error(`server not ready after ${timeoutMs} ms: ${last}\n${s.logs.slice(-20).join("\n")}`);
}

/** A fresh, valid ed25519 public key line. */
export function randomEd25519(comment = "gen@test"): string {
  const type = Buffer.from("ssh-ed25519");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(type.length);
  const klen = Buffer.alloc(4);
  klen.writeUInt32BE(32);
  return `ssh-ed25519 ${Buffer.concat([len, type, klen, randomBytes(32)]).toString("base64")} ${comment}`;
}

export interface Upgraded {
  status: number;
  head: string;
  sock: Socket;
  /** Bytes received after the response head. */
  received: () => Buffer;
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<string>;
  ended: Promise<void>;
}

/** Opens `POST path` with `Upgrade: tcp-tunnel` the way the CLI does, returning the socket after the head. */
export function upgrade(port: number, path: string, key: string, first?: Buffer): Promise<Upgraded> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    let headDone = false;
    let after = Buffer.alloc(0);
    const waiters: { re: RegExp; resolve: (s: string) => void }[] = [];
    const ended = new Promise<void>((r) => {
      sock.on("end", () => r());
      sock.on("close", () => r());
    });
    const check = () => {
      const text = after.toString("latin1");
      for (const w of [...waiters]) {
        if (w.re.test(text)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(text);
        }
      }
    };
    sock.on("error", reject);
    sock.on("data", (d: Buffer) => {
      if (headDone) {
        after = Buffer.concat([after, d]);
        check();
        return;
      }
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf("\r\n\r\n");
      if (i === -1) return;
      headDone = true;
      const head = buf.subarray(0, i).toString("latin1");
      after = buf.subarray(i + 4);
      const status = Number(head.split(" ")[1]);
      resolve({
        status,
        head,
        sock,
        received: () => after,
        ended,
        waitFor: (re, timeoutMs = 15_000) =>
          new Promise((res, rej) => {
            const t = setTimeout(
              () =>
                rej(
                  new Error(
                    `timeout waiting for ${re}; got ${JSON.stringify(after.toString("latin1").slice(-300))}`,
                  ),
                ),
              timeoutMs,
            );
            waiters.push({
              re,
              resolve: (s) => {
                clearTimeout(t);
                res(s);
              },
            });
            check();
          }),
      });
    });
    const req = Buffer.from(
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Api-Key: ${key}\r\nConnection: Upgrade\r\nUpgrade: tcp-tunnel\r\nContent-Length: 0\r\n\r\n`,
    );
    sock.write(first ? Buffer.concat([req, first]) : req);
  });
}

export function frame(type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type;
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

export function resizeFrame(rows: number, cols: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt16BE(rows, 0);
  p.writeUInt16BE(cols, 2);
  return frame(1, p);
}

/** Destroys every sandbox the keys own and waits until none holds a VM: no test leaves QEMU behind. */
export async function destroyAll(s: ServerProc, keys: string[], timeoutMs = 120_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    let live = 0;
    for (const key of keys) {
      const l = await call(s.url, "GET", "/v1/sandboxes?limit=500", { key });
      for (const x of (l.json?.data?.data ?? []) as { id: string; status: string }[]) {
        if (x.status === "destroyed" || x.status === "failed") continue;
        live++;
        if (x.status !== "destroying") await call(s.url, "DELETE", `/v1/sandboxes/${x.id}`, { key });
      }
    }
    if (live === 0 || Date.now() - t0 > timeoutMs) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}
