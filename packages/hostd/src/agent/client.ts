/**
 * Host side of the guest agent protocol (packages/agent/PROTOCOL.md): one unix socket (QEMU's
 * virtio-serial chardev, or `createos-agent --listen`), multiplexed into RPCs and byte channels with
 * per-channel credit windows, exposed as promises and Node streams with backpressure.
 *
 * This file is the façade: the connection and hello live in conn.ts, framing and credits in
 * channel.ts, each kind of channel in exec.ts, pty.ts, files.ts and tcp.ts, the error mapping in errors.ts.
 */
import type { Duplex, Readable } from "node:stream";
import type {
  AgentStats,
  ResizeFsParams,
  ResizeFsResult,
  ShutdownParams,
  SyncParams,
  SyncResult,
  ConfigureParams as WireConfigureParams,
} from "@createos-sandbox/protocol";
import type { Untrusted } from "./channel.js";
import { AgentConnection } from "./conn.js";
import { type AgentExecEvents, type AgentExecRequest, type AgentExecResult, exec } from "./exec.js";
import { type AgentFileRead, readFile, writeFile } from "./files.js";
import { type AgentPty, type AgentPtyRequest, openPty } from "./pty.js";
import { connectTcp } from "./tcp.js";

export type { AgentEvent, AgentStats, HelloResult } from "@createos-sandbox/protocol";
export type { AgentClientOptions } from "./conn.js";
export type { AgentExecEvents, AgentExecRequest, AgentExecResult } from "./exec.js";
export type { AgentPty, AgentPtyRequest } from "./pty.js";
export { AgentError, toHostdError } from "./errors.js";

/** configure's params; the clock may be given as a bigint (it is sent as a JSON number). */
export interface ConfigureParams extends Omit<WireConfigureParams, "time_ns"> {
  /** Host wall clock, ns since the epoch. */
  time_ns?: number | bigint;
}

/**
 * Client of one guest agent. Operations connect (and say hello) on demand; a lost connection fails
 * what was in flight with HostdError("agent_unreachable") and the next operation reconnects.
 * Emits "event" (every AgentEvent), the event by its name ("self", "ready") and "disconnect".
 */
export class AgentClient extends AgentConnection {
  async configure(p: ConfigureParams): Promise<void> {
    const { time_ns, ...rest } = p;
    const wire: WireConfigureParams = time_ns === undefined ? rest : { ...rest, time_ns: Number(time_ns) };
    await this.rpc("configure", wire);
  }

  /** Clock + RNG resync (after resume); returns how far the guest clock was off, ms (host − guest). */
  async sync(p: { time_ns?: number | bigint; entropy?: string } = {}): Promise<{ skew_ms: number }> {
    const params: SyncParams = { ...p, time_ns: Number(p.time_ns ?? BigInt(Date.now()) * 1_000_000n) };
    const r: Untrusted<SyncResult> = await this.rpc("sync", params);
    return { skew_ms: Number(r.skew_ms ?? 0) };
  }

  async quiesce(): Promise<void> {
    await this.rpc("quiesce", {});
  }

  /** Lifts a quiesce on the same connection (the pause it prepared for was abandoned). */
  async thaw(): Promise<void> {
    await this.rpc("thaw", {});
  }

  async resizeFs(device = "/dev/vda"): Promise<{ size_bytes: number }> {
    const params: ResizeFsParams = { device };
    const r: Untrusted<ResizeFsResult> = await this.rpc("resize_fs", params);
    return { size_bytes: Number(r.size_bytes ?? 0) };
  }

  async stats(): Promise<AgentStats> {
    return (await this.rpc("stats", {})) as unknown as AgentStats;
  }

  async shutdown(reboot = false): Promise<void> {
    const params: ShutdownParams = { reboot };
    await this.rpc("shutdown", params);
  }

  /**
   * Runs argv and resolves at exit (after all output was delivered). Aborting `signal` kills the
   * process group; the promise then resolves with the agent's result (signal "SIGKILL").
   */
  exec(req: AgentExecRequest, events?: AgentExecEvents, signal?: AbortSignal): Promise<AgentExecResult> {
    return exec(this.openChannel, req, events, signal, this.budget);
  }

  /** Opens a shell (or argv) on a new PTY; output arrives on `stream`, input is written to it. */
  openPty(req: AgentPtyRequest): Promise<AgentPty> {
    return openPty(this.openChannel, req);
  }

  /** Streams a guest file. Rejects with AgentError (code "ENOENT", "EISDIR" …). */
  readFile(path: string): Promise<AgentFileRead> {
    return readFile(this.openChannel, path);
  }

  /** Writes `body` to a guest file atomically (temp file + fsync + rename), creating parent dirs. */
  writeFile(path: string, body: Readable, mode?: number): Promise<{ bytes: number }> {
    return writeFile(this.openChannel, path, body, mode);
  }

  /** A byte stream to host:port inside the guest; end() half-closes, EOF from the guest ends reads. */
  connectTcp(port: number, host = "127.0.0.1"): Promise<Duplex> {
    return connectTcp(this.openChannel, port, host);
  }
}
