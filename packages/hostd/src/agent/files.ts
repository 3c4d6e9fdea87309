/** Guest files as streams: file_read and file_write (atomic in the guest: temp file, fsync, rename). */
import { type Readable, pipeline } from "node:stream";
import type {
  ErrorExit,
  FileReadStat,
  FileWriteOpen,
  FileWriteReady,
  OkExit,
} from "@createos-sandbox/protocol";
import type { Untrusted } from "./channel.js";
import type { OpenChannel } from "./conn.js";
import { agentError, exitHostdError, unreachable } from "./errors.js";
import { channelReadable, channelWritable } from "./streams.js";

export interface AgentFileRead {
  stat: { size: number; mode: number };
  body: Readable;
}

/** Streams a guest file. Rejects with AgentError (code "ENOENT", "EISDIR" …). */
export async function readFile(openChannel: OpenChannel, path: string): Promise<AgentFileRead> {
  const ch = await openChannel({ op: "file_read", path });
  let body: Readable | undefined;
  return new Promise((resolve, reject) => {
    ch.onCtrl = (m: Untrusted<FileReadStat>) => {
      if (body || m.size === undefined) return;
      if (!Number.isSafeInteger(m.size) || (m.size as number) < 0) {
        // A size no file has: the agent is broken or lying, and the control plane would send it as a length.
        ch.sendCtrl({ cancel: true });
        ch.close(unreachable(`the guest agent reported an impossible file size: ${String(m.size)}`));
        return;
      }
      ch.answered();
      body = channelReadable(ch, exitHostdError);
      resolve({ stat: { size: m.size as number, mode: Number(m.mode ?? 0) }, body });
    };
    // Once the body exists, an error EXIT fails the body (exitHostdError), never a short, clean end.
    const exitHook = ch.onExit;
    ch.onExit = (m: Untrusted<ErrorExit>) => {
      exitHook(m);
      // An EXIT before the size is an error even without one: no file was read.
      if (!body)
        reject(agentError(typeof m.error === "string" ? m : { error: "file_read ended before it began" }));
    };
    const closeHook = ch.onClose;
    ch.onClose = (err) => {
      closeHook(err);
      if (err && !body) reject(err);
    };
  });
}

/** Writes `body` to a guest file atomically (temp file + fsync + rename), creating parent dirs. */
export async function writeFile(
  openChannel: OpenChannel,
  path: string,
  body: Readable,
  mode?: number,
): Promise<{ bytes: number }> {
  const open: FileWriteOpen = { op: "file_write", path, mkdirs: true };
  if (mode !== undefined) open.mode = mode;
  const ch = await openChannel(open);
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      reject(e);
    };
    let ready = false;
    ch.onCtrl = (m: Untrusted<FileWriteReady>) => {
      if (m.ready !== true || ready) return;
      ready = true;
      ch.answered();
      pipeline(body, channelWritable(ch), (err) => {
        if (err && !ch.closed) {
          ch.sendCtrl({ cancel: true });
          fail(err);
        }
      });
    };
    ch.onExit = (m: Untrusted<ErrorExit & OkExit>) => {
      if (typeof m.error === "string") fail(agentError(m));
      else if (!settled) {
        settled = true;
        resolve({ bytes: Number(m.bytes ?? 0) });
      }
    };
    ch.onClose = (err) => {
      if (err) fail(err);
    };
  });
}
