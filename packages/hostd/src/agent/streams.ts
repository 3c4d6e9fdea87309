import { Duplex, Readable, Writable } from "node:stream";
/**
 * Channels as Node streams with backpressure: reads grant credit back as the consumer drains them,
 * writes wait for the agent's credit and the socket's buffer.
 */
import { DATA_CHUNK } from "@createos-sandbox/protocol";
import type { Channel, Json } from "./channel.js";

/** How an operation's EXIT fails its stream (file read, TCP); without one, EXIT just ends it. */
export type ExitError = (m: Json) => Error | undefined;

/** Host→agent data: credit-limited STDIN frames, then EOF at end(). */
function sendChunk(ch: Channel, chunk: Buffer, cb: (err?: Error | null) => void): void {
  ch.sendData(chunk).then(
    () => cb(),
    (e: Error) => cb(e),
  );
}

function sendEnd(ch: Channel, cb: () => void): void {
  ch.sendEof();
  cb();
}

/**
 * Destroying a stream before it finished cancels the operation in the guest. A normal finish (autoDestroy
 * once every direction ended) must not: the agent would close the socket or file under data it still
 * has to deliver, such as the host's last bytes after a half-close from the guest.
 */
function cancelUnlessDone(
  ch: Channel,
  done: boolean,
  err: Error | null,
  cb: (err: Error | null) => void,
): void {
  if (!ch.closed && (err || !done)) ch.sendCtrl({ cancel: true });
  cb(err);
}

/**
 * Grants credit as bytes leave the read buffer. Every consumer takes them through read() (for await,
 * paused mode, and flowing mode's own loop); only a push straight to a 'data' listener skips the
 * buffer, and wireInbound's onData covers that. _read() is no place for it: Node calls it before
 * read() removes what it returns, and not again until the next push, so the window would stay spent.
 */
function grantOnRead(ch: Channel, r: Readable): void {
  const read = r.read.bind(r);
  r.read = (size?: number) => {
    const chunk: unknown = read(size);
    ch.consumed(r.readableLength);
    return chunk;
  };
}

/** Host→agent data as a Writable: writes are credit-limited STDIN, end() sends EOF. */
export function channelWritable(ch: Channel): Writable {
  return new Writable({
    highWaterMark: DATA_CHUNK,
    write: (chunk: Buffer, _enc, cb) => sendChunk(ch, chunk, cb),
    final: (cb) => sendEnd(ch, cb),
  });
}

/** Agent→host data as a Readable; credit is granted back as the consumer drains it. */
export function channelReadable(ch: Channel, exitError?: ExitError): Readable {
  const r = new Readable({
    highWaterMark: DATA_CHUNK,
    read() {},
    destroy: (err, cb) => cancelUnlessDone(ch, r.readableEnded, err, cb),
  });
  wireInbound(ch, r, exitError);
  return r;
}

/** A channel as a Duplex (PTY, TCP): writes are credit-limited STDIN, end() sends EOF. */
export function channelDuplex(ch: Channel, exitError?: ExitError): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    readableHighWaterMark: DATA_CHUNK,
    writableHighWaterMark: DATA_CHUNK,
    read() {},
    write: (chunk: Buffer, _enc, cb) => sendChunk(ch, chunk, cb),
    final: (cb) => sendEnd(ch, cb),
    destroy: (err, cb) => cancelUnlessDone(ch, d.readableEnded && d.writableFinished, err, cb),
  });
  wireInbound(ch, d, exitError);
  return d;
}

/**
 * Routes the channel's STDOUT/STDERR, EOF, EXIT and close into `r`, after the operation's own EXIT and
 * close hooks (set before the stream existed). An error EXIT fails the stream instead of ending it, a
 * tick later: it can come in the same socket read as the frame that handed the stream out, and its
 * consumer must get the chance to listen for 'error' first.
 */
function wireInbound(ch: Channel, r: Readable, exitError?: ExitError): void {
  grantOnRead(ch, r);
  let ended = false;
  const end = () => {
    if (ended || r.destroyed) return;
    ended = true;
    r.push(null);
  };
  ch.onData = (_kind, data) => {
    if (r.destroyed) return;
    r.push(data);
    ch.consumed(r.readableLength);
  };
  ch.onEof = end;
  const exitHook = ch.onExit;
  ch.onExit = (m) => {
    exitHook(m);
    const err = exitError?.(m);
    if (!err) return end();
    ended = true;
    setImmediate(() => r.destroy(err));
  };
  const closeHook = ch.onClose;
  ch.onClose = (err) => {
    closeHook(err);
    if (err) r.destroy(err);
    else end();
  };
}
