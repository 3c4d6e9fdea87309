/** A TCP connection from inside the guest, as a Duplex with half-close both ways. */
import type { Duplex } from "node:stream";
import type { ErrorExit, TcpConnected } from "@createos-sandbox/protocol";
import type { Untrusted } from "./channel.js";
import type { OpenChannel } from "./conn.js";
import { agentError, exitHostdError } from "./errors.js";
import { channelDuplex } from "./streams.js";

/** A byte stream to host:port inside the guest; end() half-closes, EOF from the guest ends reads. */
export async function connectTcp(openChannel: OpenChannel, port: number, host: string): Promise<Duplex> {
  const ch = await openChannel({ op: "tcp", port, host });
  return new Promise((resolve, reject) => {
    let stream: Duplex | undefined;
    ch.onCtrl = (m: Untrusted<TcpConnected>) => {
      if (m.connected !== true || stream) return;
      ch.answered();
      stream = channelDuplex(ch, exitHostdError);
      resolve(stream);
    };
    const exitHook = ch.onExit;
    ch.onExit = (m: Untrusted<ErrorExit>) => {
      exitHook(m);
      if (!stream) reject(agentError(typeof m.error === "string" ? m : { error: "tcp failed" }));
    };
    const closeHook = ch.onClose;
    ch.onClose = (err) => {
      closeHook(err);
      if (err && !stream) reject(err);
    };
  });
}
