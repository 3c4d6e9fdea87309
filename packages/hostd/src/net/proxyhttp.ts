/**
 * The name proxy's port 80 (net/proxy.ts): Node's HTTP parser reads every request a guest sends on a
 * connection, and each one is checked and forwarded on an upstream connection of its own, dialled for
 * the name it carries. Checking only a connection's first bytes and splicing the rest let the guest reach
 * any site behind an allowed (shared, CDN) address: a second request on a kept-alive connection, a second
 * `Host` header, or an absolute-form target (`GET http://other/`) naming another site. Here the upstream
 * gets what the parser read, re-serialised with the one checked `Host` and an origin-form target, so it
 * never sees a request the proxy did not check; no guest byte passes raw until the upstream accepted a
 * WebSocket upgrade. A refusal is a plain-text 403 saying why, and closes the connection.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from "node:http";
import { request } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { endToEnd, rawHead } from "@createos-sandbox/protocol/http-relay";

/** What a request head names: its host and the origin-form target to send upstream, or why it is refused. */
export type RequestName = { name: string; path: string } | { why: string };

const NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;

/** A Host header's (or a target's authority's) host name, lower-case, port and trailing dot stripped. */
export function hostName(value: string): string | undefined {
  const host = value.trim().toLowerCase().replace(/:\d*$/, "").replace(/\.$/, "");
  return NAME.test(host) ? host : undefined;
}

const show = (s: string) => JSON.stringify(s.length > 100 ? `${s.slice(0, 100)}…` : s);

/**
 * The one name a request is for: exactly one `Host` header holding a host name, and a target that is a
 * path, `*`, or an `http://` URL for that same host (sent upstream as its path).
 */
export function requestName(req: Pick<IncomingMessage, "rawHeaders" | "url">): RequestName {
  const hosts: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2)
    if (req.rawHeaders[i]?.toLowerCase() === "host") hosts.push(req.rawHeaders[i + 1] ?? "");
  if (hosts.length === 0) return { why: "the request has no Host header" };
  if (hosts.length > 1) return { why: "the request has more than one Host header" };
  const header = hosts[0] ?? "";
  const name = hostName(header);
  if (!name) return { why: `the Host header ${show(header)} is not a host name` };
  const target = req.url ?? "";
  if (target.startsWith("/") || target === "*") return { name, path: target };
  const abs = /^http:\/\/([^/?#]*)([^#]*)/i.exec(target);
  if (!abs) return { why: `the request target ${show(target)} is neither a path nor an http:// URL` };
  const authority = abs[1] ?? "";
  // userinfo would make "which host" a question of whose URL parser reads it
  const other = authority.includes("@") ? undefined : hostName(authority);
  if (other !== name)
    return {
      why: `the request target ${show(target)} names another host than the Host header ${show(header)}`,
    };
  const rest = abs[2] ?? "";
  return { name, path: rest.startsWith("/") ? rest : `/${rest}` };
}

type Status = 400 | 403 | 502;
const STATUS: Record<Status, string> = { 400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway" };

function refusal(why: string): { body: string; headers: string[] } {
  const body = `name proxy: ${why}\n`;
  const headers = [
    "Content-Type",
    "text/plain; charset=utf-8",
    "Content-Length",
    `${Buffer.byteLength(body)}`,
  ];
  return { body, headers: [...headers, "Connection", "close"] };
}

/** Answers `status` with `why` and closes the connection (what follows on it is not read). */
export function refuse(res: ServerResponse, status: Status, why: string): void {
  if (res.headersSent) return void res.destroy();
  const { body, headers } = refusal(why);
  res.writeHead(status, STATUS[status], headers);
  res.end(body);
}

/** {@link refuse} for a socket out of the HTTP server's hands. */
export function refuseRaw(socket: Duplex, status: Status, why: string): void {
  const { body, headers } = refusal(why);
  socket.end(rawHead(status, STATUS[status], headers) + body);
}

/** The request's end-to-end headers; a chunked body stays chunked (Node de-chunks what it reads). */
function upstreamHeaders(req: IncomingMessage): string[] {
  const headers = endToEnd(req.rawHeaders);
  if (req.headers["transfer-encoding"] !== undefined) headers.push("Transfer-Encoding", "chunked");
  return headers;
}

/**
 * Sends `req` (target `path`) on `up`, a connection to the checked name's address, and streams the answer
 * into `res`; both bodies stream with backpressure. `up` serves this request only (`Connection: close`).
 */
export function forwardRequest(req: IncomingMessage, res: ServerResponse, up: Socket, path: string): void {
  let out: ClientRequest;
  try {
    out = request({ method: req.method, path, headers: upstreamHeaders(req), createConnection: () => up });
  } catch (e) {
    // a head Node's server parsed but its client will not send (a byte it refuses in the target)
    up.destroy();
    refuse(res, 400, `the request cannot be forwarded: ${(e as Error).message}`);
    return;
  }
  out.on("response", (pres) => {
    try {
      res.writeHead(pres.statusCode ?? 502, pres.statusMessage, endToEnd(pres.rawHeaders));
    } catch (e) {
      // what Node's client parser accepts its server may refuse to send (a DEL in the reason phrase):
      // thrown here, that would end the daemon
      pres.destroy();
      return refuse(res, 502, `the upstream's response head cannot be relayed: ${(e as Error).message}`);
    }
    pres.pipe(res);
    pres.on("error", () => res.destroy());
  });
  out.on("error", (e) => {
    if (!res.headersSent) refuse(res, 502, `the upstream failed: ${e.message}`);
    // a cut response is cut; after a whole one the guest's connection goes on (its next request)
    else if (!res.writableFinished) res.destroy();
  });
  res.on("close", () => {
    req.unpipe(out);
    out.destroy();
    up.destroy();
  });
  req.pipe(out);
}

/**
 * A WebSocket upgrade, checked like any request: it goes upstream on `up`; a 101 goes back raw and the two
 * sockets are piped together (what follows is the upgraded protocol). Any other answer is relayed and the
 * connection closed: the HTTP server has let go of it, so no further request on it could be checked.
 */
export function forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, up: Socket, path: string) {
  const headers = [...endToEnd(req.rawHeaders), "Connection", "Upgrade", "Upgrade", "websocket"];
  let out: ClientRequest;
  try {
    out = request({ method: req.method, path, headers, createConnection: () => up });
  } catch (e) {
    up.destroy();
    return refuseRaw(socket, 400, `the request cannot be forwarded: ${(e as Error).message}`);
  }
  let answered = false;
  const close = () => {
    socket.destroy();
    up.destroy();
  };
  socket.on("close", close);
  socket.on("error", close);
  out.on("upgrade", (pres, upgraded, uhead) => {
    answered = true;
    socket.write(rawHead(101, pres.statusMessage || "Switching Protocols", pres.rawHeaders));
    if (uhead.length > 0) socket.write(uhead);
    if (head.length > 0) upgraded.write(head);
    upgraded.pipe(socket);
    socket.pipe(upgraded);
    upgraded.on("close", close);
    upgraded.on("error", close);
  });
  out.on("response", (pres) => {
    answered = true;
    const hs = [...endToEnd(pres.rawHeaders), "Connection", "close"];
    socket.write(rawHead(pres.statusCode ?? 502, pres.statusMessage ?? "", hs));
    pres.pipe(socket);
    pres.on("error", close);
  });
  out.on("error", (e) => {
    if (!answered && socket.writable) refuseRaw(socket, 502, `the upstream failed: ${e.message}`);
    else socket.destroy();
    up.destroy();
  });
  out.end();
}
