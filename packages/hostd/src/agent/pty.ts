/** `exec` on a new PTY: one Duplex for the terminal, resize and signals as CTRL messages. */
import type { Duplex } from "node:stream";
import type { ExecExit, ExecOpen, ExecStarted } from "@createos-sandbox/protocol";
import type { Untrusted } from "./channel.js";
import type { OpenChannel } from "./conn.js";
import { agentError } from "./errors.js";
import { channelDuplex } from "./streams.js";

export interface AgentPtyRequest {
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  rows: number;
  cols: number;
}

export type AgentPtyExit = Pick<ExecExit, "exit_code" | "signal">;

export interface AgentPty {
  stream: Duplex;
  pid: number;
  resize(rows: number, cols: number): void;
  signal(name: string): void;
  exited: Promise<AgentPtyExit>;
}

/** Opens a shell (or argv) on a new PTY; output arrives on `stream`, input is written to it. */
export async function openPty(openChannel: OpenChannel, req: AgentPtyRequest): Promise<AgentPty> {
  // No argv: the agent starts a login shell (bash where the image has it).
  const open: ExecOpen = {
    op: "exec",
    argv: req.argv ?? [],
    stdin: true,
    pty: { rows: req.rows, cols: req.cols },
  };
  if (req.env) open.env = req.env;
  if (req.cwd) open.cwd = req.cwd;
  const ch = await openChannel(open);
  let resolveExit!: (v: AgentPtyExit) => void;
  let rejectExit!: (e: Error) => void;
  const exited = new Promise<AgentPtyExit>((res, rej) => {
    resolveExit = res;
    rejectExit = rej;
  });
  exited.catch(() => {});
  const stream = channelDuplex(ch);
  // Nobody holds the stream until it started: a failure before that (a timeout, a lost connection) is
  // the promise's to report, not an 'error' without a listener (which would take the process down).
  const unclaimed = () => {};
  stream.on("error", unclaimed);
  return new Promise<AgentPty>((resolve, reject) => {
    let started = false;
    ch.onCtrl = (m: Untrusted<ExecStarted>) => {
      if (m.started !== true || started) return;
      started = true;
      ch.answered();
      stream.off("error", unclaimed);
      resolve({
        stream,
        pid: Number(m.pid),
        resize: (rows, cols) => ch.sendCtrl({ resize: { rows, cols } }),
        signal: (name) => ch.sendCtrl({ signal: name }),
        exited,
      });
    };
    const exitHook = ch.onExit;
    ch.onExit = (m: Untrusted<ExecExit> & { code?: unknown }) => {
      exitHook(m);
      if (!started) {
        reject(agentError({ error: m.error ?? "pty failed", code: m.code ?? "EINVAL" }));
        return;
      }
      const r: AgentPtyExit = {
        exit_code: typeof m.exit_code === "number" ? m.exit_code : -1,
      };
      if (typeof m.signal === "string") r.signal = m.signal;
      resolveExit(r);
    };
    const closeHook = ch.onClose;
    ch.onClose = (err) => {
      closeHook(err);
      if (err) {
        reject(err);
        rejectExit(err);
      }
    };
  });
}
