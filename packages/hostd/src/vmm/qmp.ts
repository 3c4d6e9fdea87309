/**
 * QMP (QEMU Machine Protocol) client: one unix-socket connection per VM, commands matched to replies by
 * id so several may be in flight, asynchronous events (STOP, RESUME, SHUTDOWN, MIGRATION …) delivered to
 * listeners. The connection closing means QEMU exited (or is exiting).
 */
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { HostdError } from "@createos-sandbox/protocol";
import { connectUnix } from "../sys/nofollow.js";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  command: string;
}

export class QmpError extends HostdError {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    desc: string,
  ) {
    super("internal", `QMP ${command}: ${qmpClass}: ${desc}`);
    this.name = "QmpError";
  }
}

export class QmpClient extends EventEmitter {
  private buf = "";
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private closedErr: Error | undefined;

  private constructor(private readonly sock: Socket) {
    super();
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => this.onData(d));
    sock.on("error", () => {
      // 'close' follows and settles everything
    });
    sock.on("close", () => {
      this.closedErr = new HostdError("internal", "QMP connection closed (QEMU exited)");
      for (const p of this.pending.values()) p.reject(this.closedErr);
      this.pending.clear();
      this.emit("close");
    });
  }

  /** Connects (retrying while QEMU creates the socket) and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let lastErr: unknown;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          // QEMU's socket, in its dir: never connected to through a link (sys/nofollow.ts).
          const s = connectUnix(path);
          s.once("connect", () => {
            s.removeAllListeners("error");
            resolve(s);
          });
          s.once("error", reject);
        });
        const c = new QmpClient(sock);
        await c.greeting(Math.max(1000, deadline - Date.now()));
        await c.execute("qmp_capabilities");
        return c;
      } catch (e) {
        lastErr = e;
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    throw new HostdError(
      "internal",
      `cannot connect to QMP at ${path}: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`,
    );
  }

  private greetingWaiter: ((ok: boolean) => void) | undefined;
  private gotGreeting = false;

  private greeting(timeoutMs: number): Promise<void> {
    if (this.gotGreeting) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.sock.destroy();
        reject(new Error("no QMP greeting"));
      }, timeoutMs);
      this.greetingWaiter = (ok) => {
        clearTimeout(t);
        if (ok) resolve();
        else reject(new Error("QMP closed before greeting"));
      };
      this.once("close", () => this.greetingWaiter?.(false));
    });
  }

  private onData(d: string): void {
    this.buf += d;
    for (;;) {
      const nl = this.buf.indexOf("\n");
      if (nl < 0) break;
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ("QMP" in msg) {
        this.gotGreeting = true;
        this.greetingWaiter?.(true);
        continue;
      }
      if (typeof msg.event === "string") {
        this.emit("event", msg as unknown as QmpEvent);
        continue;
      }
      const id = msg.id === undefined ? undefined : String(msg.id);
      if (id === undefined) continue;
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      if ("error" in msg) {
        const err = msg.error as { class?: string; desc?: string };
        p.reject(new QmpError(p.command, err.class ?? "Error", err.desc ?? "unknown error"));
      } else p.resolve(msg.return);
    }
  }

  get closed(): boolean {
    return this.closedErr !== undefined;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.sock.write(
        `${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`,
      );
    });
  }

  /** Resolves with the first event named `name` for which `pred` holds, or rejects after `timeoutMs`. */
  waitEvent(name: string, timeoutMs: number, pred: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEv = (e: QmpEvent) => {
        if (e.event !== name || !pred(e)) return;
        cleanup();
        resolve(e);
      };
      const onClose = () => {
        cleanup();
        reject(new HostdError("internal", `QEMU exited while waiting for ${name}`));
      };
      const t = setTimeout(() => {
        cleanup();
        reject(new HostdError("internal", `timed out after ${timeoutMs} ms waiting for QMP event ${name}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(t);
        this.off("event", onEv);
        this.off("close", onClose);
      };
      this.on("event", onEv);
      this.on("close", onClose);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  /** Resolves once the socket is closed (QEMU gone or we closed it). */
  whenClosed(): Promise<void> {
    if (this.closedErr) return Promise.resolve();
    return new Promise((r) => this.once("close", () => r()));
  }
}
