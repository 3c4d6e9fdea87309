/**
 * One proxied HTTP/1.1 exchange over a tunnel to the guest: Node's HTTP client speaks to the guest on the
 * tunnel's byte stream (`createConnection`), so bodies, streaming responses and server-sent events pass
 * chunk by chunk with TCP's backpressure both ways, and an `Upgrade` (WebSocket) becomes two raw pipes.
 * Hop-by-hop headers stop here (RFC 9110 §7.6.1); `X-Forwarded-For/Proto/Host` are added.
 */
import { type IncomingMessage, type ServerResponse, request } from "node:http";
import type { Duplex } from "node:stream";
import { endToEnd, rawHead } from "@createos-sandbox/protocol/http-relay";

/** The request headers the guest sees: end-to-end ones, the forwarding trio, and the upgrade if any. */
export function upstreamHeaders(req: IncomingMessage, client: string, proto: "http" | "https"): string[] {
  const pairs = endToEnd(req.rawHeaders);
  const out: string[] = [];
  for (let i = 0; i < pairs.length; i += 2) {
    if (!/^x-forwarded-(for|proto|host)$/i.test(pairs[i]!)) out.push(pairs[i]!, pairs[i + 1]!);
  }
  const prior = req.headers["x-forwarded-for"];
  const xff = prior ? `${Array.isArray(prior) ? prior.join(", ") : prior}, ${client}` : client;
  out.push("X-Forwarded-For", xff, "X-Forwarded-Proto", proto, "X-Forwarded-Host", req.headers.host ?? "");
  const upgrade = req.headers.upgrade;
  if (upgrade) out.push("Connection", "Upgrade", "Upgrade", upgrade);
  return out;
}

/** Why an exchange failed before the guest's response head: the caller words it for the client. */
export type Failure = "timeout" | "broken";

export interface Exchange {
  /** Settles when the exchange is over (either side closed); never rejects. */
  done: Promise<void>;
}

/**
 * Sends `req` to the guest on `conn` and streams the answer into `res`. `onHead` runs once the guest's
 * response head arrived (or fails with the error the client is to be told, before any byte was sent).
 */
export function forwardRequest(
  req: IncomingMessage,
  res: ServerResponse,
  conn: Duplex,
  headers: string[],
  timeoutMs: number,
  fail: (why: Failure) => void,
): Exchange {
  const { up, timer } = send(req, conn, headers, timeoutMs, fail);
  const done = new Promise<void>((resolve) => {
    up.on("response", (pres) => {
      clearTimeout(timer);
      try {
        res.writeHead(pres.statusCode ?? 502, pres.statusMessage, endToEnd(pres.rawHeaders));
      } catch {
        // The guest's head is its own: one Node's client parses but its server will not send (a status
        // out of 100–999, a control byte in the reason phrase) would throw here and end the control plane.
        pres.destroy();
        // writeHead kept the reason it refused: the refusal's own head must not reuse it
        res.statusMessage = "";
        fail("broken");
        return;
      }
      // Headers go out at once, so an event stream's client sees the response before its first event.
      res.flushHeaders();
      pres.pipe(res);
      pres.on("error", () => res.destroy());
    });
    up.on("error", () => {
      clearTimeout(timer);
      if (!res.headersSent) fail("broken");
      // A refusal already written (the deadline's 504) is left to finish; a cut response is cut.
      else if (!res.writableEnded) res.destroy();
    });
    res.on("close", () => {
      clearTimeout(timer);
      up.destroy();
      conn.destroy();
      resolve();
    });
  });
  req.pipe(up);
  return { done };
}

/**
 * The upgrade half: the request goes to the guest; its 101 goes back raw and both sockets are piped
 * together. Any other answer is relayed as is and the connection closed (an upgrade cannot keep it).
 */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  conn: Duplex,
  headers: string[],
  timeoutMs: number,
  fail: (why: Failure) => void,
): Exchange {
  let answered = false;
  const { up, timer } = send(req, conn, headers, timeoutMs, fail);
  const done = new Promise<void>((resolve) => {
    const close = () => {
      clearTimeout(timer);
      socket.destroy();
      conn.destroy();
      resolve();
    };
    socket.on("close", close);
    socket.on("error", close);
    up.on("upgrade", (pres, guest, ghead) => {
      answered = true;
      clearTimeout(timer);
      const hs = pres.rawHeaders;
      socket.write(rawHead(101, pres.statusMessage || "Switching Protocols", hs));
      if (ghead.length) socket.write(ghead);
      if (head.length) guest.write(head);
      guest.pipe(socket);
      socket.pipe(guest);
      guest.on("close", close);
      guest.on("error", close);
    });
    up.on("response", (pres) => {
      answered = true;
      clearTimeout(timer);
      const hs = [...endToEnd(pres.rawHeaders), "Connection", "close"];
      socket.write(rawHead(pres.statusCode ?? 502, pres.statusMessage ?? "", hs));
      pres.pipe(socket);
      pres.on("end", () => {
        socket.end();
        setTimeout(() => socket.destroy(), 2000).unref();
      });
    });
    up.on("error", () => {
      clearTimeout(timer);
      if (!answered) fail("broken");
      close();
    });
  });
  up.end();
  return { done };
}

/** The request on its way to the guest, and the deadline for its response head. */
function send(
  req: IncomingMessage,
  conn: Duplex,
  headers: string[],
  timeoutMs: number,
  fail: (why: Failure) => void,
) {
  // No agent: each exchange has its own tunnel, handed to the client as its socket. A request that came
  // with a chunked body goes on chunked whatever its method: Node's client frames GET, HEAD, DELETE and
  // OPTIONS bodies by nothing else, and the guest would read the body as a second request (smuggling).
  const chunked = req.headers["transfer-encoding"] !== undefined;
  const up = request({
    method: req.method,
    path: req.url,
    headers: chunked ? [...headers, "Transfer-Encoding", "chunked"] : headers,
    createConnection: () => conn as never,
  });
  const timer = setTimeout(() => {
    fail("timeout");
    up.destroy();
  }, timeoutMs);
  return { up, timer };
}
