/**
 * Connection hygiene of the listening server: deadlines for headers and whole requests (slowloris), idle
 * keep-alive connections closed, and a cap on the connections one client address holds at once. What a
 * refused or timed-out client is told comes from the error catalog like every other answer.
 */
import type { Server, ServerOptions } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "../config.js";
import { rawResponse, renderError } from "./errors.js";

type ConnLimits = Pick<
  ServerConfig,
  "maxHeaderBytes" | "headersTimeoutMs" | "requestTimeoutMs" | "keepAliveTimeoutMs" | "maxConnectionsPerIp"
>;

/** Set on a socket past its address's cap: its request is answered `too_many_connections`, then closed. */
export const OVER_CAP = Symbol("overCap");
type Marked = Socket & { [OVER_CAP]?: number };

/** How long a refused connection may stay open waiting to send the request it is refused for. */
const REFUSED_LINGER_MS = 2000;

/** `node:http` options: its parser enforces the header and request deadlines on a periodic sweep. */
export function serverOptions(c: ConnLimits): ServerOptions {
  const sweep = Math.max(100, Math.min(1000, Math.floor(c.headersTimeoutMs / 4) || 1000));
  return {
    maxHeaderSize: c.maxHeaderBytes,
    headersTimeout: c.headersTimeoutMs,
    // node requires requestTimeout ≥ headersTimeout when both are set.
    requestTimeout: c.requestTimeoutMs > 0 ? Math.max(c.requestTimeoutMs, c.headersTimeoutMs) : 0,
    connectionsCheckingInterval: sweep,
    keepAliveTimeout: c.keepAliveTimeoutMs,
  };
}

/** The address a cap counts by: IPv4-mapped IPv6 folded to IPv4, so one client has one count. */
export function clientAddress(s: { remoteAddress?: string | undefined }): string {
  const a = s.remoteAddress ?? "unknown";
  return a.startsWith("::ffff:") ? a.slice(7) : a;
}

/** Counts each address's open connections; sockets past the cap are marked (see OVER_CAP) and closed soon. */
export function capConnections(server: Server, c: ConnLimits): { open(ip: string): number } {
  const open = new Map<string, number>();
  server.keepAliveTimeout = c.keepAliveTimeoutMs;
  if (c.maxConnectionsPerIp > 0) {
    server.on("connection", (socket: Marked) => {
      const ip = clientAddress(socket);
      const n = open.get(ip) ?? 0;
      if (n >= c.maxConnectionsPerIp) {
        socket[OVER_CAP] = c.maxConnectionsPerIp;
        setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
        return;
      }
      open.set(ip, n + 1);
      socket.once("close", () => {
        const left = (open.get(ip) ?? 1) - 1;
        if (left <= 0) open.delete(ip);
        else open.set(ip, left);
      });
    });
  }
  return { open: (ip) => open.get(ip) ?? 0 };
}

/** The refusal for a request on a socket past its address's cap, or undefined. */
export function overCap(socket: Socket): Error | undefined {
  const limit = (socket as Marked)[OVER_CAP];
  return limit === undefined ? undefined : apiError("too_many_connections", { limit });
}

/**
 * A request whose headers or body did not arrive in time: 408, then the socket is closed even if the
 * client never reads or closes its side (a half-open server socket would otherwise stay).
 */
export function timedOut(socket: Duplex, reqId: string): void {
  rawResponse(socket, renderError(apiError("request_timeout")), reqId);
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** How long, and for how many bytes, the unread body of a refused request is still read and dropped. */
const LINGER_MS = 2000;
const LINGER_BYTES = 64 * 1024 * 1024;

/**
 * Lingering close (RFC 9112 §9.6) for a request refused before its body was read (413, 401, 429): node
 * closes the socket as soon as the answer is written, and a socket closed while the client's bytes still
 * arrive is answered by the kernel with a reset, which can wipe the answer from the client's receive buffer
 * before the client reads it (`fetch failed` instead of a 413). Instead the write side ends (the client gets
 * the answer and a FIN) and what still arrives is read and dropped until the client closes, LINGER_BYTES
 * have come or LINGER_MS have passed.
 */
export function lingerOnClose(socket: Socket): void {
  // node calls this once the response with `connection: close` is written.
  socket.destroySoon = () => {
    socket.end();
    let n = 0;
    const stop = () => socket.destroy();
    const timer = setTimeout(stop, LINGER_MS).unref();
    socket.on("data", (c: Buffer) => {
      n += c.length;
      if (n > LINGER_BYTES) stop();
    });
    socket.once("end", stop);
    socket.once("close", () => clearTimeout(timer));
  };
}

/** Bytes a client sends ahead of the 101 are held, up to this, before its socket is paused. */
const EARLY_BYTES_MAX = 1024 * 1024;

export interface UpgradeWatch {
  /** Aborted when the client closes or half-closes before the handler accepted. */
  signal: AbortSignal;
  /** At accept: stops watching and hands back what arrived meanwhile, to go after the request's head. */
  take(): Buffer;
}

/**
 * An upgrade socket that nobody reads never notices that its client left: while a handler awaits the guest
 * (PTY, TCP connect), this reads it — keeping the bytes for the handler — so a disconnect at any await
 * aborts the handler's signal and the handler can undo what it opened.
 */
export function watchUpgrade(socket: Duplex): UpgradeWatch {
  const ac = new AbortController();
  const early: Buffer[] = [];
  let n = 0;
  const collect = (c: Buffer) => {
    early.push(c);
    n += c.length;
    if (n > EARLY_BYTES_MAX) socket.pause();
  };
  const gone = () => ac.abort();
  socket.on("data", collect);
  socket.once("end", gone);
  socket.once("close", gone);
  return {
    signal: ac.signal,
    take: () => {
      socket.off("data", collect);
      socket.off("end", gone);
      socket.off("close", gone);
      if (socket.isPaused()) socket.resume();
      return Buffer.concat(early);
    },
  };
}
