/**
 * `Upgrade: tcp-tunnel` handshakes (protocol.md §3.4/§3.6) over a raw socket. fetch cannot hand
 * back the connection after a 101, so this writes the HTTP/1.1 request itself (forcing HTTP/1.1
 * via ALPN on TLS) and returns the socket as a plain byte pipe.
 */
import net from "node:net";
import tls from "node:tls";
import { TCP_TUNNEL_UPGRADE } from "@createos-sandbox/protocol/api";
import {
  CreateosSandboxConnectionError,
  CreateosSandboxError,
  CreateosSandboxTimeoutError,
  errorFromResponse,
} from "./errors.js";
import { redactSecrets } from "./redact.js";

/** Response head larger than this is not an HTTP server we speak to. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** How much of a refusal body is read for the error message (as the CLI does). */
export const MAX_ERROR_BODY_BYTES = 4 * 1024;

export interface ParsedHead {
  status: number;
  statusText: string;
  headers: Headers;
  /** Offset of the first byte after the blank line. */
  bodyStart: number;
}

/** Parses a status line + headers once the blank line has arrived; undefined while incomplete. */
export function parseResponseHead(buf: Buffer): ParsedHead | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end === -1) return undefined;
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
  const statusLine = lines.shift() ?? "";
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m)
    throw new CreateosSandboxError(`Malformed HTTP status line: ${JSON.stringify(statusLine.slice(0, 100))}`);
  const headers = new Headers();
  for (const line of lines) {
    const idx = line.indexOf(":");
    if (idx <= 0) continue;
    try {
      headers.append(line.slice(0, idx).trim(), line.slice(idx + 1).trim());
    } catch {
      // An invalid header value from the server is not worth failing the handshake over.
    }
  }
  return { status: Number(m[1]), statusText: m[2] ?? "", headers, bodyStart: end + 4 };
}

/** Serialises the upgrade request. Header values come from a `Headers` object, which rejects CR/LF. */
export function buildUpgradeRequest(path: string, host: string, headers: Headers): string {
  const lines = [`POST ${path} HTTP/1.1`, `Host: ${host}`];
  headers.forEach((value, key) => {
    const lower = key.toLowerCase();
    if (lower === "host" || lower === "connection" || lower === "upgrade" || lower === "content-length")
      return;
    if (lower === "content-type" || lower === "transfer-encoding") return;
    lines.push(`${key}: ${value}`);
  });
  lines.push("Connection: Upgrade", `Upgrade: ${TCP_TUNNEL_UPGRADE}`, "Content-Length: 0", "", "");
  return lines.join("\r\n");
}

export interface OpenUpgradeOptions {
  /** Absolute URL of the endpoint (origin already validated by the caller). */
  url: URL;
  headers: Headers;
  signal?: AbortSignal | undefined;
  /** Connect + handshake budget; 0 disables. */
  timeoutMs: number;
}

function hostHeader(url: URL): string {
  // URL.host omits default ports, which is exactly what Host should carry.
  return url.host;
}

/**
 * Opens the upgraded connection. Resolves with the socket once `101` arrives; bytes that came with
 * the response head are put back into the socket's read buffer, so the caller loses nothing.
 * A non-101 answer rejects with the typed API error for its status.
 */
export function openUpgrade(options: OpenUpgradeOptions): Promise<net.Socket> {
  const { url, headers, signal, timeoutMs } = options;
  const endpoint = url.pathname;
  return new Promise<net.Socket>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason ?? new CreateosSandboxError("Aborted."));
      return;
    }
    const secure = url.protocol === "https:";
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = Number(url.port || (secure ? 443 : 80));
    const socket: net.Socket = secure
      ? tls.connect({
          host: hostname,
          port,
          servername: net.isIP(hostname) ? undefined : hostname,
          ALPNProtocols: ["http/1.1"],
        })
      : net.connect({ host: hostname, port, allowHalfOpen: true });
    socket.setNoDelay(true);

    let head = Buffer.alloc(0);
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    const cleanup = () => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.removeListener("readable", onReadable);
      socket.removeListener("error", onError);
      socket.removeListener("close", onClose);
      socket.removeListener(secure ? "secureConnect" : "connect", onConnect);
    };
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onAbort = () => fail(signal?.reason ?? new CreateosSandboxError("Aborted."));
    const onError = (err: Error) =>
      fail(new CreateosSandboxConnectionError(`Network error: POST ${endpoint}`, { cause: err }));
    const onClose = () => {
      if (settled) return;
      // Closed before a full head, or while reading a refusal body with no length: report what we have.
      const parsed = safeParse(head);
      if (parsed && parsed.status !== 101) {
        settled = true;
        cleanup();
        reject(refusalError(parsed, head, endpoint));
        return;
      }
      fail(new CreateosSandboxConnectionError(`Connection closed during upgrade: POST ${endpoint}`));
    };
    const onConnect = () => {
      socket.write(buildUpgradeRequest(endpoint, hostHeader(url), headers));
    };
    // Paused-mode reads ('readable' + read()) so no byte is consumed beyond what we take; once the
    // listener is removed the socket returns to its default state and a later 'data' listener or
    // pipe() starts it as usual.
    const onReadable = () => {
      for (;;) {
        if (settled) return;
        const chunk = socket.read() as Buffer | null;
        if (chunk === null) return;
        onChunk(chunk);
      }
    };
    const onChunk = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      let parsed: ParsedHead | undefined;
      try {
        parsed = parseResponseHead(head);
      } catch (err) {
        fail(err);
        return;
      }
      if (!parsed) {
        if (head.length > MAX_HEAD_BYTES) fail(new CreateosSandboxError("Upgrade response head too large."));
        return;
      }
      if (parsed.status === 101) {
        settled = true;
        cleanup();
        const rest = head.subarray(parsed.bodyStart);
        if (rest.length > 0) socket.unshift(rest);
        resolve(socket);
        return;
      }
      // Refused: collect a short body (Content-Length or until close), then raise the typed error.
      const length = Number(parsed.headers.get("content-length") ?? Number.NaN);
      const have = head.length - parsed.bodyStart;
      const want = Number.isFinite(length) ? Math.min(length, MAX_ERROR_BODY_BYTES) : MAX_ERROR_BODY_BYTES;
      if (have >= want) {
        settled = true;
        cleanup();
        socket.destroy();
        reject(refusalError(parsed, head, endpoint));
      }
    };

    socket.once(secure ? "secureConnect" : "connect", onConnect);
    socket.on("readable", onReadable);
    socket.on("error", onError);
    socket.on("close", onClose);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs > 0) {
      timer = setTimeout(
        () =>
          fail(new CreateosSandboxTimeoutError(`Upgrade timed out after ${timeoutMs}ms: POST ${endpoint}`)),
        timeoutMs,
      );
    }
  });
}

function safeParse(buf: Buffer): ParsedHead | undefined {
  try {
    return parseResponseHead(buf);
  } catch {
    return undefined;
  }
}

function refusalError(parsed: ParsedHead, raw: Buffer, endpoint: string): Error {
  const body = raw.subarray(parsed.bodyStart, parsed.bodyStart + MAX_ERROR_BODY_BYTES);
  let envelope: unknown;
  if ((parsed.headers.get("content-type") ?? "").includes("json")) {
    try {
      envelope = JSON.parse(body.toString("utf8"));
    } catch {
      envelope = undefined;
    }
  }
  // Response cannot carry 1xx statuses; any other non-101 maps as a normal API error.
  const status = parsed.status >= 200 && parsed.status <= 599 ? parsed.status : 502;
  const response = new Response(null, { status, statusText: parsed.statusText, headers: parsed.headers });
  const err = errorFromResponse(response, envelope, { endpoint, method: "POST" });
  if (envelope === undefined && body.length > 0 && status >= 300) {
    // Keep the server's plain-text reason visible, as the CLI does.
    err.message = `${err.message} ${redactSecrets(body.toString("utf8").trim().slice(0, 500))}`;
  }
  return err;
}
