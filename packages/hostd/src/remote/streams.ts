/**
 * The host side of the upgraded streams (exec, PTY, TCP tunnel): read the request frame, open the
 * stream on the daemon, answer OPEN, then move bytes both ways with the socket's backpressure. The
 * connection closing is cancellation: the exec is killed, the PTY or tunnel closed.
 */
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import {
  type ExecRequest,
  F,
  FrameConn,
  type HostDaemon,
  HostdError,
  type PtyRequest,
  type WireFrame,
  framedDuplex,
  parseJson,
  splice,
  toWireError,
} from "@createos-sandbox/protocol";

type Kind = "exec" | "pty" | "tcp";

/** The first frame, within a few seconds: a connection that never asks holds nothing for long. */
function firstFrame(conn: FrameConn): Promise<WireFrame> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new HostdError("bad_request", "no request frame within 10 s")),
      10_000,
    );
    conn.onFrame((f) => {
      clearTimeout(timer);
      if (f.type === F.REQUEST) resolve(f);
      else reject(new HostdError("bad_request", `expected a request frame, got type ${f.type}`));
    });
    void conn.whenClosed().then(() => {
      clearTimeout(timer);
      reject(new HostdError("bad_request", "closed before the request"));
    });
  });
}

export async function serveStream(daemon: HostDaemon, kind: Kind, socket: Socket): Promise<void> {
  const conn = new FrameConn(socket);
  try {
    const req = parseJson<Record<string, unknown>>((await firstFrame(conn)).payload);
    const id = String(req.sandbox_id ?? "");
    if (kind === "exec") await serveExec(daemon, conn, id, req);
    else if (kind === "pty") await servePty(daemon, conn, id, req as unknown as PtyRequest);
    else await serveTcp(daemon, conn, id, Number(req.port));
  } catch (e) {
    await conn.sendJson(F.ERROR, toWireError(e));
    conn.close();
  }
}

async function serveExec(daemon: HostDaemon, conn: FrameConn, id: string, raw: Record<string, unknown>) {
  const ac = new AbortController();
  let stdin: PassThrough | undefined;
  if (raw.stdin === true) {
    stdin = new PassThrough();
    stdin.on("drain", () => conn.resume());
  }
  conn.onFrame((f) => {
    if (f.type === F.IN && stdin) {
      if (!stdin.write(f.payload)) conn.pause();
    } else if (f.type === F.IN_EOF) stdin?.end();
    else if (f.type === F.CANCEL) ac.abort();
  });
  void conn.whenClosed().then(() => ac.abort());
  const req: ExecRequest = { argv: raw.argv as string[] };
  if (raw.env) req.env = raw.env as Record<string, string>;
  if (typeof raw.cwd === "string") req.cwd = raw.cwd;
  if (stdin) req.stdin = stdin;
  // OPEN first: from here on the client treats frames as the command's own.
  await conn.sendJson(F.OPEN, {});
  // Output callbacks cannot wait (the interface is push), so frames queue in the socket in order.
  const result = await daemon.exec(
    id,
    req,
    { onStdout: (c) => void conn.send(F.OUT, c), onStderr: (c) => void conn.send(F.ERR, c) },
    ac.signal,
  );
  await conn.sendJson(F.RESULT, result);
  conn.close();
}

async function servePty(daemon: HostDaemon, conn: FrameConn, id: string, req: PtyRequest) {
  const { sandbox_id: _, ...ptyReq } = req as PtyRequest & { sandbox_id?: string };
  const pty = await daemon.openPty(id, ptyReq);
  await conn.sendJson(F.OPEN, {});
  const wire = framedDuplex(conn, { data: F.IN, eof: F.IN_EOF }, { data: F.OUT, eof: F.OUT_EOF }, (f) => {
    if (f.type === F.RESIZE) {
      const { rows, cols } = parseJson<{ rows: number; cols: number }>(f.payload);
      pty.resize(rows, cols);
    } else if (f.type === F.SIGNAL) pty.signal(parseJson<{ name: string }>(f.payload).name);
  });
  // The PTY's output end becomes OUT_EOF; the client's IN_EOF ends the PTY's input.
  const outDone = new Promise<void>((r) => wire.once("finish", r).once("close", r));
  pty.stream.pipe(wire);
  wire.pipe(pty.stream);
  void conn.whenClosed().then(() => pty.stream.destroy());
  const exit = await pty.exited.catch((e: unknown) => ({ error: e }));
  // Output still queued reaches the client before the exit status (bounded: a PTY whose output never
  // ends after its process exited must not hold the connection).
  await Promise.race([outDone, new Promise((r) => setTimeout(r, 2000).unref())]);
  if ("error" in exit) await conn.sendJson(F.ERROR, toWireError(exit.error));
  else await conn.sendJson(F.RESULT, exit);
  conn.close();
}

async function serveTcp(daemon: HostDaemon, conn: FrameConn, id: string, port: number) {
  if (!(Number.isInteger(port) && port >= 1 && port <= 65535))
    throw new HostdError("bad_request", `port must be 1-65535, got ${port}`);
  const guest = await daemon.connectTcp(id, port);
  await conn.sendJson(F.OPEN, {});
  const wire = framedDuplex(conn, { data: F.IN, eof: F.IN_EOF }, { data: F.OUT, eof: F.OUT_EOF });
  await splice(wire, guest);
  conn.close();
}
