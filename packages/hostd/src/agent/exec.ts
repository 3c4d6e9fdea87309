/** `exec` without a PTY: argv in, stdout/stderr out through callbacks, the exit status at the end. */
import { type Readable, pipeline } from "node:stream";
import { type ExecExit, type ExecOpen, type ExecStarted, FrameKind } from "@createos-sandbox/protocol";
import type { Channel, Untrusted } from "./channel.js";
import type { OpenChannel } from "./conn.js";
import { channelWritable } from "./streams.js";

export interface AgentExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Whole stdin, or a stream of it. Absent: /dev/null. */
  stdin?: Buffer | Readable;
}

export interface AgentExecEvents {
  onStdout?(chunk: Buffer): void;
  onStderr?(chunk: Buffer): void;
}

export interface AgentExecResult extends ExecExit {
  /** Agent-measured fork+exec time, µs. */
  spawn_us?: number;
  /** Host-measured wall time from request to exit, ms. */
  exec_ms: number;
}

/**
 * Runs argv and resolves at exit (after all output was delivered). Aborting `signal` kills the
 * process group; the promise then resolves with the agent's result (signal "SIGKILL").
 */
export async function exec(
  openChannel: OpenChannel,
  req: AgentExecRequest,
  events: AgentExecEvents = {},
  signal?: AbortSignal,
): Promise<AgentExecResult> {
  const t0 = performance.now();
  signal?.throwIfAborted();
  const open: ExecOpen = { op: "exec", argv: req.argv, stdin: req.stdin !== undefined };
  if (req.env) open.env = req.env;
  if (req.cwd) open.cwd = req.cwd;
  const ch = await openChannel(open);
  return new Promise<AgentExecResult>((resolve, reject) => {
    let spawnUs: number | undefined;
    let callbackError: unknown;
    const onAbort = () => ch.sendCtrl({ cancel: true });
    signal?.addEventListener("abort", onAbort, { once: true });
    const done = () => signal?.removeEventListener("abort", onAbort);
    ch.onCtrl = (m: Untrusted<ExecStarted>) => {
      if (m.started !== true) return;
      if (typeof m.spawn_us === "number") spawnUs = m.spawn_us;
      if (req.stdin !== undefined) pipeIn(ch, req.stdin);
    };
    ch.onData = (kind, data) => {
      try {
        if (callbackError === undefined) {
          if (kind === FrameKind.STDOUT) events.onStdout?.(data);
          else events.onStderr?.(data);
        }
      } catch (e) {
        // The caller cannot take the output: stop the command and report its error.
        callbackError = e;
        ch.sendCtrl({ cancel: true });
      } finally {
        ch.consumed(0);
      }
    };
    ch.onExit = (m: Untrusted<ExecExit>) => {
      done();
      if (callbackError !== undefined) {
        reject(callbackError);
        return;
      }
      const r: AgentExecResult = {
        exit_code: typeof m.exit_code === "number" ? m.exit_code : -1,
        exec_ms: performance.now() - t0,
      };
      if (typeof m.signal === "string") r.signal = m.signal;
      if (typeof m.error === "string") r.error = m.error;
      if (spawnUs !== undefined) r.spawn_us = spawnUs;
      if (typeof m.wall_us === "number") r.wall_us = m.wall_us;
      resolve(r);
    };
    ch.onClose = (err) => {
      done();
      if (err) reject(err);
    };
  });
}

/** Feeds exec stdin (a Buffer or a stream) into the channel, then EOF. */
function pipeIn(ch: Channel, src: Buffer | Readable): void {
  if (Buffer.isBuffer(src)) {
    ch.sendData(src).then(
      () => ch.sendEof(),
      () => {},
    );
    return;
  }
  pipeline(src, channelWritable(ch), () => {});
}
