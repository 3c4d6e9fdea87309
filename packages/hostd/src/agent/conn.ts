/**
 * The connection to one guest agent: dial the socket, say hello, and say it again on a fresh
 * connection whenever the old one is gone (a resume, a fork, a hostd restart, a lost socket). `hello`
 * starts a new agent session, so it is only ever sent on a new connection (PROTOCOL.md "Sessions").
 */
import { EventEmitter } from "node:events";
import {
  AGENT_PROTOCOL_VERSION,
  type AgentEvent,
  type ConfigureParams,
  type HelloParams,
  type HelloResult,
  type OpenRequest,
} from "@createos-sandbox/protocol";
import { connectUnix } from "../sys/nofollow.js";
import { type Channel, type Json, Mux } from "./channel.js";
import { unreachable } from "./errors.js";
import { OutputBudget } from "./exec.js";

export interface AgentClientOptions {
  /** Default timeout of one RPC, ms. */
  rpcTimeoutMs?: number;
  /** How long one hello waits before the client reconnects and says hello again, ms. */
  helloAttemptMs?: number;
  /** How long an operation waits for the agent when no connection is up, ms. */
  readyTimeoutMs?: number;
  /** How long the agent may take to answer an OPEN (exec started, file ready …), ms. */
  openTimeoutMs?: number;
  /** Open channels (exec, shell, file, tunnel) at most; more → HostdError("busy"). */
  maxChannels?: number;
  /** Bytes of buffered exec output held at once (ExecRequest.bufferBytes); more → HostdError("busy"). */
  maxBufferedBytes?: number;
}

/** The defaults of one VM's caps, from the environment (docs/server.md). */
export function envLimits(env: NodeJS.ProcessEnv = process.env): {
  maxChannels: number;
  maxBufferedBytes: number;
} {
  const num = (v: string | undefined, dflt: number) => {
    const n = Number(v);
    return v !== undefined && v !== "" && Number.isFinite(n) && n > 0 ? n : dflt;
  };
  return {
    maxChannels: num(env.CREATEOS_SANDBOX_MAX_STREAMS_PER_SANDBOX, 256),
    maxBufferedBytes: num(env.CREATEOS_SANDBOX_MAX_EXEC_BUFFER_MIB_PER_SANDBOX, 64) * 1024 * 1024,
  };
}

export interface HelloOptions {
  timeoutMs?: number;
  /**
   * configure's fields to send with this hello (PROTOCOL.md `hello`), made anew for each attempt. Only
   * an explicit hello carries them: the reconnects operations make on their own never re-apply an identity.
   */
  identity?: () => ConfigureParams;
}

/** Opens a channel on the live connection (connecting first when there is none). */
export type OpenChannel = (req: OpenRequest) => Promise<Channel>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Operations connect (and say hello) on demand; a lost connection fails what was in flight with
 * HostdError("agent_unreachable") and the next operation reconnects. Emits "event" (every
 * AgentEvent), the event by its name ("self", "ready"), "disconnect", and "warning" (msg, fields) when
 * the agent broke the protocol (it overran a window).
 */
export class AgentConnection extends EventEmitter {
  private conn: Mux | undefined;
  private connecting: Promise<Mux> | undefined;
  private nextRpcId = 1;
  private closedByUser = false;
  private readonly rpcTimeoutMs: number;
  private readonly helloAttemptMs: number;
  private readonly readyTimeoutMs: number;
  /** Buffered exec output of this VM held at once; survives reconnects (the callers still hold it). */
  protected readonly budget: OutputBudget;
  private readonly owner = {
    maxChannels: 0,
    openTimeoutMs: 0,
    warn: (msg: string, fields: Record<string, unknown>) => {
      this.emit("warning", msg, fields);
    },
    event: (m: Json & { event: string }) => {
      this.emit("event", m as unknown as AgentEvent);
      // Also by name ("self", "ready") for listeners that want one kind.
      if (m.event !== "error" && m.event !== "event" && m.event !== "disconnect") this.emit(m.event, m);
    },
    lost: (c: Mux) => {
      if (this.conn === c) {
        this.conn = undefined;
        this.emit("disconnect");
      }
    },
  };

  constructor(
    readonly socketPath: string,
    opts: AgentClientOptions = {},
  ) {
    super();
    this.rpcTimeoutMs = opts.rpcTimeoutMs ?? 30_000;
    this.helloAttemptMs = opts.helloAttemptMs ?? 1_000;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
    const limits = envLimits();
    this.owner.maxChannels = opts.maxChannels ?? limits.maxChannels;
    this.owner.openTimeoutMs = opts.openTimeoutMs ?? this.rpcTimeoutMs;
    this.budget = new OutputBudget(opts.maxBufferedBytes ?? limits.maxBufferedBytes);
  }

  get connected(): boolean {
    return this.conn?.ready === true && !this.conn.closed;
  }

  /**
   * Connects and says hello, retrying until the agent answers or `timeoutMs` passes: the readiness
   * probe after boot or restore. Each attempt that gets no answer in time reconnects, so a hello
   * stuck in a socket nobody reads yet is dropped rather than answered late.
   */
  async waitReady(opts?: number | HelloOptions): Promise<HelloResult> {
    const timeoutMs = (typeof opts === "number" ? opts : opts?.timeoutMs) ?? this.readyTimeoutMs;
    const identity = typeof opts === "number" ? undefined : opts?.identity;
    this.closedByUser = false;
    const deadline = Date.now() + timeoutMs;
    const attemptMs = () => Math.max(1, Math.min(this.helloAttemptMs, deadline - Date.now()));
    let lastErr: unknown;
    let backoff = 10;
    for (;;) {
      let conn: Mux | undefined;
      try {
        conn = await this.dial(attemptMs());
        // Made per attempt: a retried hello carries the clock of its own moment.
        const params: HelloParams = { ...identity?.(), version: AGENT_PROTOCOL_VERSION };
        const res = await conn.rpc(this.nextRpcId++, "hello", params, attemptMs());
        if (conn.closed) throw unreachable("agent connection closed");
        const old = this.conn;
        conn.ready = true;
        this.conn = conn;
        if (old && old !== conn) old.shutdown(unreachable("replaced by a new connection"));
        return res as unknown as HelloResult;
      } catch (e) {
        lastErr = e;
        if (conn && conn !== this.conn) conn.shutdown(unreachable("hello failed"));
      }
      if (this.closedByUser) throw unreachable("client closed");
      if (Date.now() >= deadline) {
        const why = lastErr instanceof Error ? lastErr.message : String(lastErr);
        throw unreachable(`agent at ${this.socketPath} not ready after ${timeoutMs} ms: ${why}`);
      }
      await sleep(Math.min(backoff, Math.max(0, deadline - Date.now())));
      backoff = Math.min(backoff * 2, 200);
    }
  }

  private dial(timeoutMs: number): Promise<Mux> {
    return new Promise((resolve, reject) => {
      // QEMU's socket, in its dir: never connected to through a link (sys/nofollow.ts).
      const sock = connectUnix(this.socketPath);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(unreachable("connect timeout"));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        sock.setNoDelay?.(true);
        resolve(new Mux(sock, this.owner));
      });
      sock.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** The live connection, connecting (and saying hello) first when there is none. */
  private session(): Promise<Mux> {
    if (this.conn?.ready && !this.conn.closed) return Promise.resolve(this.conn);
    if (!this.connecting) {
      this.connecting = this.waitReady()
        .then(() => {
          if (!this.conn) throw unreachable("agent connection closed");
          return this.conn;
        })
        .finally(() => {
          this.connecting = undefined;
        });
    }
    return this.connecting;
  }

  /** Opens a channel for one operation; see OpenChannel. */
  protected readonly openChannel: OpenChannel = async (req) => (await this.session()).open(req);

  /** Says hello on a fresh connection (closing the current one: its channels are gone). */
  async hello(opts?: number | HelloOptions): Promise<HelloResult> {
    this.conn?.shutdown(unreachable("reconnecting"));
    return this.waitReady(opts);
  }

  async rpc(method: string, params: object = {}, timeoutMs = this.rpcTimeoutMs): Promise<Json> {
    const conn = await this.session();
    return conn.rpc(this.nextRpcId++, method, params, timeoutMs);
  }

  /** Closes the connection; the next operation reconnects. */
  close(): void {
    this.closedByUser = true;
    this.conn?.shutdown(unreachable("client closed"));
    this.conn = undefined;
  }
}
