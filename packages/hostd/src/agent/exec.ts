/** `exec` without a PTY: argv in, stdout/stderr out through callbacks, the exit status at the end. */
import { type Readable, pipeline } from "node:stream";
import {
  type ExecEvents,
  type ExecExit,
  type ExecOpen,
  ExecOutput,
  type ExecStarted,
  FrameKind,
  HostdError,
} from "@createos-sandbox/protocol";
import type { Channel, Untrusted } from "./channel.js";
import type { OpenChannel } from "./conn.js";
import { channelWritable } from "./streams.js";

export interface AgentExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Whole stdin, or a stream of it. Absent: /dev/null. */
  stdin?: Buffer | Readable;
  /** A buffered exec: see ExecRequest.bufferBytes (@createos-sandbox/protocol). */
  bufferBytes?: number;
}

/** See ExecEvents: a callback's promise holds back the guest's credit for its chunk until it settles. */
export type AgentExecEvents = ExecEvents;

export interface AgentExecResult extends ExecExit {
  /** Agent-measured fork+exec time, µs. */
  spawn_us?: number;
  /** Host-measured wall time from request to exit, ms. */
  exec_ms: number;
}

/**
 * Buffered exec output one VM's callers hold at once (ExecRequest.bufferBytes): bytes are taken as they
 * are delivered and given back when their exec ends.
 */
export class OutputBudget {
  used = 0;
  constructor(readonly cap: number) {}

  take(n: number): boolean {
    if (this.used + n > this.cap) return false;
    this.used += n;
    return true;
  }

  release(n: number): void {
    this.used -= n;
  }
}

const busy = (cap: number) =>
  new HostdError("busy", `buffered exec output on this sandbox is at its cap of ${cap} bytes`);

/**
 * Runs argv and resolves at exit (after all output was delivered). Aborting `signal` kills the
 * process group; the promise then resolves with the agent's result (signal "SIGKILL"). The guest gets
 * credit for output once the callbacks took it (a returned promise settled); a buffered exec
 * (`bufferBytes`) holds its share of `budget` until it ends.
 */
export async function exec(
  openChannel: OpenChannel,
  req: AgentExecRequest,
  events: AgentExecEvents = {},
  signal?: AbortSignal,
  budget?: OutputBudget,
): Promise<AgentExecResult> {
  const t0 = performance.now();
  signal?.throwIfAborted();
  const buffered = req.bufferBytes !== undefined && budget !== undefined;
  if (buffered && budget.used >= budget.cap) throw busy(budget.cap);
  const open: ExecOpen = { op: "exec", argv: req.argv, stdin: req.stdin !== undefined };
  if (req.env) open.env = req.env;
  if (req.cwd) open.cwd = req.cwd;
  const ch = await openChannel(open);
  return new Promise<AgentExecResult>((resolve, reject) => {
    let spawnUs: number | undefined;
    let callbackError: unknown;
    let started = false;
    /** Bytes of this (buffered) exec delivered, and what of the budget it holds. */
    let kept = 0;
    let budgetHeld = 0;
    const stop = (e: unknown) => {
      callbackError ??= e;
      ch.sendCtrl({ cancel: true });
      output.clear();
    };
    /** Output not taken yet: no credit for it until the callback took it. */
    const output = new ExecOutput(events, (held) => ch.consumed(held), stop);
    const onAbort = () => {
      ch.sendCtrl({ cancel: true });
      output.clear();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const done = () => {
      signal?.removeEventListener("abort", onAbort);
      budget?.release(budgetHeld);
      budgetHeld = 0;
    };
    ch.onCtrl = (m: Untrusted<ExecStarted>) => {
      if (m.started !== true || started) return;
      started = true;
      ch.answered();
      if (typeof m.spawn_us === "number") spawnUs = m.spawn_us;
      if (req.stdin !== undefined) pipeIn(ch, req.stdin);
    };
    /** Whether this chunk is delivered: a buffered exec stops at bufferBytes and within the budget. */
    const admit = (n: number): boolean => {
      if (!buffered || callbackError !== undefined) return callbackError === undefined;
      if (kept + n > req.bufferBytes!) return false;
      if (!budget.take(n)) {
        stop(busy(budget.cap));
        return false;
      }
      kept += n;
      budgetHeld += n;
      return true;
    };
    ch.onData = (kind, data) => {
      if (!signal?.aborted && admit(data.length)) output.push(kind === FrameKind.STDERR, data);
      else ch.consumed(output.held);
    };
    ch.onExit = (m: Untrusted<ExecExit>) => {
      const finish = () => {
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
      // The result comes after the output: what the agent sent before EXIT is taken first.
      void output.idle().then(finish);
    };
    ch.onClose = (err) => {
      if (!err) return;
      output.clear();
      done();
      reject(err);
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
