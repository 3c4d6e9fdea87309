/**
 * The host side of the upgraded streams (exec, PTY, TCP tunnel). Each is opened (the PTY or tunnel exists,
 * the exec is accepted), then run: bytes both ways with the socket's backpressure. The connection closing
 * is cancellation: the exec is killed, the PTY or tunnel closed.
 *
 * With the request in the upgrade's header, the stream is opened before the 101 answer, so a refusal is a
 * plain HTTP error and the 101 itself says "open". Otherwise the 101 comes first, the request is the first
 * frame, and OPEN or ERROR answers it.
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

export type StreamKind = "exec" | "pty" | "tcp";
type Request = Record<string, unknown>;
/** An opened stream: run it on the connection once the client knows it is open. */
type Opened = (conn: FrameConn) => Promise<void>;

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

function open(daemon: HostDaemon, kind: StreamKind, req: Request): Promise<Opened> {
  const id = String(req.sandbox_id ?? "");
  if (kind === "exec") return Promise.resolve((conn) => runExec(daemon, conn, id, req));
  if (kind === "pty") return openPty(daemon, id, req as unknown as PtyRequest);
  return openTcp(daemon, id, Number(req.port));
}

/**
 * Serves one upgraded connection. `accept` writes the 101 answer; `refuse` answers an HTTP error instead
 * (only possible while the 101 has not been written).
 */
export async function serveStream(
  daemon: HostDaemon,
  kind: StreamKind,
  socket: Socket,
  headerReq: Request | undefined,
  accept: () => void,
  refuse: (e: unknown) => void,
): Promise<void> {
  if (headerReq) {
    let opened: Opened;
    try {
      opened = await open(daemon, kind, headerReq);
    } catch (e) {
      return refuse(e);
    }
    accept();
    return runGuarded(new FrameConn(socket), opened);
  }
  accept();
  const conn = new FrameConn(socket);
  try {
    const opened = await open(daemon, kind, parseJson<Request>((await firstFrame(conn)).payload));
    await conn.sendJson(F.OPEN, {});
    await runGuarded(conn, opened);
  } catch (e) {
    await conn.sendJson(F.ERROR, toWireError(e));
    conn.close();
  }
}

async function runGuarded(conn: FrameConn, opened: Opened): Promise<void> {
  try {
    await opened(conn);
  } catch (e) {
    await conn.sendJson(F.ERROR, toWireError(e));
    conn.close();
  }
}

async function runExec(daemon: HostDaemon, conn: FrameConn, id: string, raw: Request): Promise<void> {
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
  if (typeof raw.bufferBytes === "number") req.bufferBytes = raw.bufferBytes;
  if (stdin) req.stdin = stdin;
  // Each callback's promise resolves once the socket took the frame: a client that stops reading
  // withholds the guest's credit (ExecEvents), so output waits in the guest, not here.
  const result = await daemon.exec(
    id,
    req,
    { onStdout: (c) => conn.send(F.OUT, c), onStderr: (c) => conn.send(F.ERR, c) },
    ac.signal,
  );
  await conn.sendJson(F.RESULT, result);
  conn.close();
}

async function openPty(daemon: HostDaemon, id: string, req: PtyRequest): Promise<Opened> {
  const { sandbox_id: _, ...ptyReq } = req as PtyRequest & { sandbox_id?: string };
  const pty = await daemon.openPty(id, ptyReq);
  return async (conn) => {
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
  };
}

async function openTcp(daemon: HostDaemon, id: string, port: number): Promise<Opened> {
  if (!(Number.isInteger(port) && port >= 1 && port <= 65535))
    throw new HostdError("bad_request", `port must be 1-65535, got ${port}`);
  const guest = await daemon.connectTcp(id, port);
  return async (conn) => {
    const wire = framedDuplex(conn, { data: F.IN, eof: F.IN_EOF }, { data: F.OUT, eof: F.OUT_EOF });
    await splice(wire, guest);
    conn.close();
  };
}
