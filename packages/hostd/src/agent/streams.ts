import { Duplex, Readable, Writable } from "node:stream";
/**
 * Channels as Node streams with backpressure: reads grant credit back as the consumer drains them,
 * writes wait for the agent's credit and the socket's buffer.
 */
import { DATA_CHUNK } from "@createos-sandbox/protocol";
import type { Channel } from "./channel.js";

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

/** Cancelling a stream (destroy) cancels the operation in the guest. */
function cancelOnDestroy(ch: Channel, err: Error | null, cb: (err: Error | null) => void): void {
  if (!ch.closed) ch.sendCtrl({ cancel: true });
  cb(err);
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
export function channelReadable(ch: Channel): Readable {
  const r = new Readable({
    highWaterMark: DATA_CHUNK,
    read() {
      ch.consumed(r.readableLength);
    },
    destroy: (err, cb) => cancelOnDestroy(ch, err, cb),
  });
  wireInbound(ch, r);
  return r;
}

/** A channel as a Duplex (PTY, TCP): writes are credit-limited STDIN, end() sends EOF. */
export function channelDuplex(ch: Channel): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    readableHighWaterMark: DATA_CHUNK,
    writableHighWaterMark: DATA_CHUNK,
    read() {
      ch.consumed(d.readableLength);
    },
    write: (chunk: Buffer, _enc, cb) => sendChunk(ch, chunk, cb),
    final: (cb) => sendEnd(ch, cb),
    destroy: (err, cb) => cancelOnDestroy(ch, err, cb),
  });
  wireInbound(ch, d);
  return d;
}

/** Routes the channel's STDOUT/STDERR, EOF, EXIT and close into `r`. */
function wireInbound(ch: Channel, r: Readable): void {
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    r.push(null);
  };
  ch.onData = (_kind, data) => {
    if (r.destroyed) return;
    r.push(data);
    ch.consumed(r.readableLength);
  };
  ch.onEof = end;
  ch.onExit = () => end();
  ch.onClose = (err) => {
    if (err) r.destroy(err);
    else end();
  };
}
