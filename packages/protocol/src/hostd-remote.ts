/**
 * `RemoteHostDaemon`: the `HostDaemon` interface over the network (HOSTD-PROTOCOL.md), so the control
 * plane drives a host daemon in another process or on another machine exactly as it drives the
 * in-process one. Each method maps to one exchange; callbacks, signals and streams map to frames.
 */
import type { IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import { ExecOutput } from "./exec-output.js";
import { type RemoteOptions, Transport } from "./hostd-transport.js";
import {
  F,
  type FrameConn,
  HOSTD_REQUEST_HEADER,
  HOSTD_ROUTES,
  type HostdCall,
  MAX_REQUEST_HEADER,
  type WireFrame,
  framedDuplex,
  fromWireError,
  parseJson,
} from "./hostd-wire.js";
import {
  type DiskMount,
  type ExecEvents,
  type ExecRequest,
  type ExecResult,
  type FileStat,
  type HostDaemon,
  type HostEvent,
  type HostInfo,
  HostdError,
  type ImageInfo,
  type NetUsage,
  type OverlayMembership,
  type Progress,
  type PtyRequest,
  type PtySession,
  type SnapshotRef,
  type VmRuntime,
  type VmSpec,
} from "./hostd.js";

export type { RemoteOptions } from "./hostd-transport.js";

/** Splits an NDJSON body into parsed lines as they arrive (blank heartbeat lines skipped). */
async function* ndjson(res: IncomingMessage): AsyncGenerator<Record<string, unknown>> {
  let buf = "";
  for await (const chunk of res) {
    buf += (chunk as Buffer).toString("utf8");
    let nl = buf.indexOf("\n");
    while (nl !== -1) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) yield JSON.parse(line) as Record<string, unknown>;
      nl = buf.indexOf("\n");
    }
  }
}

export class RemoteHostDaemon implements HostDaemon {
  private readonly t: Transport;
  private readonly listeners = new Set<(e: HostEvent) => void>();
  private events: { stop(): void } | undefined;

  constructor(url: string, opts: RemoteOptions) {
    this.t = new Transport(url, opts);
  }

  get url(): string {
    return this.t.url;
  }

  /** One JSON call; the answer is a 200 whose body is whitespace heartbeats, then `{result}` or `{error}`. */
  private async call<T>(method: HostdCall, args: unknown[]): Promise<T> {
    const body = JSON.stringify(args);
    const req = this.t.start("POST", `${HOSTD_ROUTES.call}${method}`, {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
    });
    const res = await this.t.exchange(req, body);
    const text = (await this.t.body(res)).toString("utf8").trim();
    let parsed: { result?: T; error?: unknown };
    try {
      parsed = JSON.parse(text);
    } catch {
      throw this.t.unreachable(`${method}: answer cut short (${text.length} bytes)`);
    }
    if (parsed.error !== undefined) throw fromWireError(parsed, `${method} failed`);
    return parsed.result as T;
  }

  info(): Promise<HostInfo> {
    return this.call("info", []);
  }
  images(): Promise<ImageInfo[]> {
    return this.call("images", []);
  }
  create(spec: VmSpec): Promise<VmRuntime> {
    return this.call("create", [spec]);
  }
  pause(sandboxId: string, snapshotId?: string): Promise<SnapshotRef> {
    return this.call("pause", snapshotId ? [sandboxId, snapshotId] : [sandboxId]);
  }
  resume(snapshot: SnapshotRef, spec: VmSpec): Promise<VmRuntime> {
    return this.call("resume", [snapshot, spec]);
  }
  fork(
    parent: SnapshotRef,
    child: VmSpec,
    opts?: { start_paused?: boolean; snapshot_id?: string },
  ): Promise<{ runtime?: VmRuntime; snapshot?: SnapshotRef }> {
    return this.call("fork", opts ? [parent, child, opts] : [parent, child]);
  }
  destroy(sandboxId: string): Promise<void> {
    return this.call("destroy", [sandboxId]);
  }
  deleteSnapshot(snapshot: SnapshotRef): Promise<void> {
    return this.call("deleteSnapshot", [snapshot]);
  }
  resizeDisk(sandboxId: string, diskMib: number): Promise<void> {
    return this.call("resizeDisk", [sandboxId, diskMib]);
  }
  mountDisk(sandboxId: string, mount: DiskMount): Promise<void> {
    return this.call("mountDisk", [sandboxId, mount]);
  }
  unmountDisk(sandboxId: string, mountPath: string): Promise<void> {
    return this.call("unmountDisk", [sandboxId, mountPath]);
  }
  diskStatus(sandboxId: string): Promise<{ mount_path: string; error?: string }[]> {
    return this.call("diskStatus", [sandboxId]);
  }
  setDiskCredentials(diskId: string, accessKey: string, secretKey: string): Promise<void> {
    return this.call("setDiskCredentials", [diskId, accessKey, secretKey]);
  }
  setEgress(sandboxId: string, egress: string[]): Promise<void> {
    return this.call("setEgress", [sandboxId, egress]);
  }
  takeNetUsage(sandboxId: string): Promise<NetUsage> {
    return this.call("takeNetUsage", [sandboxId]);
  }
  setBandwidth(sandboxId: string, remainingBytes: number): Promise<void> {
    return this.call("setBandwidth", [sandboxId, remainingBytes]);
  }
  setNetworks(sandboxId: string, networks: OverlayMembership[]): Promise<void> {
    return this.call("setNetworks", [sandboxId, networks]);
  }
  commitImage(
    sandboxId: string,
    image: string,
    opts?: { keep?: boolean },
  ): Promise<{ image: string; size_bytes: number }> {
    return this.call("commitImage", opts ? [sandboxId, image, opts] : [sandboxId, image]);
  }
  deleteImage(image: string): Promise<void> {
    return this.call("deleteImage", [image]);
  }
  list(): Promise<{ sandbox_id: string; ip: string; pid: number }[]> {
    return this.call("list", []);
  }
  listSnapshots(): Promise<SnapshotRef[]> {
    return this.call("listSnapshots", []);
  }

  async ensureImage(name: string, onProgress?: (p: Progress) => void): Promise<void> {
    const body = JSON.stringify({ name });
    const req = this.t.start("POST", HOSTD_ROUTES.ensureImage, { "content-type": "application/json" }, false);
    const res = await this.t.exchange(req, body);
    try {
      for await (const line of ndjson(res)) {
        if (line.progress) onProgress?.(line.progress as Progress);
        else if (line.error) throw fromWireError(line, "ensureImage failed");
        else if (line.done) return;
      }
    } catch (e) {
      throw this.t.asHostd(e);
    }
    throw this.t.unreachable("ensureImage: stream ended without an answer");
  }

  /**
   * Opens an upgraded stream. A request that fits a header goes with the upgrade and the 101 means the
   * stream is open (one round trip); a larger one is the first frame, answered by OPEN or ERROR. `onOpen`
   * runs synchronously at opening, before any frame behind it is dispatched.
   */
  private async open(route: string, request: unknown, onOpen: (conn: FrameConn) => void): Promise<FrameConn> {
    const encoded = Buffer.from(JSON.stringify(request)).toString("base64url");
    if (encoded.length <= MAX_REQUEST_HEADER) {
      const conn = await this.t.upgrade(route, { [HOSTD_REQUEST_HEADER]: encoded });
      onOpen(conn);
      return conn;
    }
    const conn = await this.t.upgrade(route);
    return new Promise((resolve, reject) => {
      conn.onFrame((f) => {
        if (f.type === F.OPEN) {
          onOpen(conn);
          resolve(conn);
        } else if (f.type === F.ERROR) {
          reject(fromWireError(parseJson(f.payload), "stream refused"));
          conn.destroy();
        }
      });
      void conn.whenClosed().then(() => reject(this.t.unreachable("stream closed before it opened")));
      void conn.sendJson(F.REQUEST, request);
    });
  }

  async exec(
    sandboxId: string,
    req: ExecRequest,
    events?: ExecEvents,
    signal?: AbortSignal,
  ): Promise<ExecResult> {
    signal?.throwIfAborted();
    const { stdin, ...rest } = req;
    let settle!: { resolve(r: ExecResult): void; reject(e: unknown): void };
    const done = new Promise<ExecResult>((resolve, reject) => {
      settle = { resolve, reject };
    });
    let live: FrameConn | undefined;
    let result = false;
    // The socket is not read while a callback holds a chunk (ExecEvents), so TCP slows the host daemon;
    // the result is settled after the output before it was taken.
    const output = new ExecOutput(
      events ?? {},
      (held) => (held > 0 ? live?.pause() : live?.resume()),
      (e) => {
        settle.reject(e);
        live?.destroy();
      },
    );
    const onFrame = (f: WireFrame) => {
      if (f.type === F.OUT || f.type === F.ERR) {
        if (!signal?.aborted) output.push(f.type === F.ERR, f.payload);
      } else if (f.type === F.RESULT) {
        const r = parseJson<ExecResult>(f.payload);
        result = true;
        void output.idle().then(() => settle.resolve(r));
      } else if (f.type === F.ERROR) settle.reject(fromWireError(parseJson(f.payload), "exec failed"));
    };
    const conn = await this.open(
      HOSTD_ROUTES.exec,
      { sandbox_id: sandboxId, ...rest, stdin: stdin !== undefined },
      (c) => {
        live = c;
        c.onFrame(onFrame);
      },
    );
    void conn
      .whenClosed()
      .then(() => result || settle.reject(this.t.unreachable("exec stream closed before its result")));
    // After an abort nobody wants the output: reading goes on, to reach the RESULT.
    const onAbort = () => {
      output.clear();
      conn.resume();
      void conn.send(F.CANCEL);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (stdin !== undefined) void this.pump(conn, stdin);
    try {
      return await done;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      conn.close();
    }
  }

  /** stdin → IN frames at the pace the socket takes them, then IN_EOF. */
  private async pump(conn: FrameConn, stdin: Buffer | Readable): Promise<void> {
    try {
      if (Buffer.isBuffer(stdin)) await conn.send(F.IN, stdin);
      else for await (const chunk of stdin) await conn.send(F.IN, chunk as Buffer);
      await conn.send(F.IN_EOF);
    } catch {
      conn.destroy();
    }
  }

  async openPty(sandboxId: string, req: PtyRequest): Promise<PtySession> {
    let session!: PtySession;
    await this.open(HOSTD_ROUTES.pty, { sandbox_id: sandboxId, ...req }, (conn) => {
      let exit!: { resolve(r: { exit_code: number; signal?: string }): void; reject(e: unknown): void };
      const exited = new Promise<{ exit_code: number; signal?: string }>((resolve, reject) => {
        exit = { resolve, reject };
      });
      exited.catch(() => undefined);
      const stream = framedDuplex(
        conn,
        { data: F.OUT, eof: F.OUT_EOF },
        { data: F.IN, eof: F.IN_EOF },
        (f) => {
          if (f.type === F.RESULT) exit.resolve(parseJson(f.payload));
          else if (f.type === F.ERROR) exit.reject(fromWireError(parseJson(f.payload), "pty failed"));
        },
      );
      void conn
        .whenClosed()
        .then(() => exit.reject(this.t.unreachable("pty closed before the process exited")));
      session = {
        stream,
        resize: (rows, cols) => void conn.sendJson(F.RESIZE, { rows, cols }),
        signal: (name) => void conn.sendJson(F.SIGNAL, { name }),
        exited,
      };
    });
    return session;
  }

  async connectTcp(sandboxId: string, port: number) {
    let stream!: ReturnType<typeof framedDuplex>;
    await this.open(HOSTD_ROUTES.tcp, { sandbox_id: sandboxId, port }, (conn) => {
      stream = framedDuplex(conn, { data: F.OUT, eof: F.OUT_EOF }, { data: F.IN, eof: F.IN_EOF });
    });
    return stream;
  }

  private filePath(sandboxId: string, path: string, mode?: number): string {
    const q = new URLSearchParams({ sandbox_id: sandboxId, path });
    if (mode !== undefined) q.set("mode", String(mode));
    return `${HOSTD_ROUTES.files}?${q}`;
  }

  async readFile(sandboxId: string, path: string): Promise<{ stat: FileStat; body: Readable }> {
    const req = this.t.start("GET", this.filePath(sandboxId, path), {}, false);
    const res = await this.t.exchange(req);
    // The reader sets the pace from here on: a paused download is not a dead host.
    req.setTimeout(0);
    const stat = { size: Number(res.headers["x-file-size"]), mode: Number(res.headers["x-file-mode"]) };
    return { stat, body: res };
  }

  async writeFile(
    sandboxId: string,
    path: string,
    body: Readable,
    mode?: number,
  ): Promise<{ bytes: number }> {
    const req = this.t.start(
      "PUT",
      this.filePath(sandboxId, path, mode),
      {
        "content-type": "application/octet-stream",
      },
      false,
    );
    const resP = this.t.response(req);
    // The daemon may refuse before reading it all (too large, not found): stop sending then.
    body.pipe(req);
    body.once("error", (e) => req.destroy(e));
    try {
      const res = await resP;
      if (res.statusCode !== 200) throw await this.t.failure(res);
      return JSON.parse((await this.t.body(res)).toString("utf8")).result as { bytes: number };
    } finally {
      body.unpipe(req);
      if (!body.readableEnded) body.resume();
    }
  }

  onEvent(listener: (e: HostEvent) => void): () => void {
    this.listeners.add(listener);
    this.events ??= this.followEvents();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) {
        this.events?.stop();
        this.events = undefined;
      }
    };
  }

  /** Keeps one event stream open while anyone listens, reconnecting after a drop. */
  private followEvents(): { stop(): void } {
    let stopped = false;
    let current: { destroy(): void } | undefined;
    const loop = async () => {
      while (!stopped) {
        try {
          const req = this.t.start("GET", HOSTD_ROUTES.events, {}, false);
          current = req;
          const res = await this.t.exchange(req);
          for await (const line of ndjson(res)) {
            if (line.event) for (const l of this.listeners) l(line.event as HostEvent);
          }
        } catch {
          // The host is down or restarting: try again shortly (the health check reports it meanwhile).
        }
        if (!stopped) await new Promise((r) => setTimeout(r, 1000).unref());
      }
    };
    void loop();
    return {
      stop() {
        stopped = true;
        current?.destroy();
      },
    };
  }

  async close(): Promise<void> {
    this.events?.stop();
    this.events = undefined;
    this.listeners.clear();
    this.t.close();
  }
}

export { HostdError };
