/** Every error a client sees, as a JSend envelope: our catalog errors (schema failures are too), Fastify's own. */
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { ApiError, apiError } from "@createos-sandbox/protocol";

export interface JSendOut {
  status: number;
  body: string;
  headers: Record<string, string>;
  /** Not one of ours: logged, answered as a bare 500. */
  internal: boolean;
}

/** Fastify's framework errors that a client can cause, in our catalog's words. */
function fromFastify(err: { code?: string }): ApiError | undefined {
  switch (err.code) {
    case "FST_ERR_BAD_URL":
      return apiError("bad_request_line");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return apiError("unsupported_content_type", { type: "none" });
    default:
      return undefined;
  }
}

/** Renders any thrown value as a JSend envelope; unknown errors become a 500 without details. */
export function renderError(err: unknown): JSendOut {
  const known = err instanceof ApiError ? err : fromFastify((err ?? {}) as { code?: string });
  const e = known ?? apiError("internal");
  const headers: Record<string, string> = {};
  const retry = (err as { retryAfter?: number } | undefined)?.retryAfter ?? e.retryAfter;
  if (retry !== undefined) headers["retry-after"] = String(retry);
  const allow = (err as { allow?: string } | undefined)?.allow;
  if (allow) headers.allow = allow;
  const body =
    e.status < 500
      ? JSON.stringify({ status: "fail", data: e.data ?? null })
      : JSON.stringify({ status: "error", message: e.message, code: e.status });
  return { status: e.status, body, headers, internal: !known };
}

/** A complete HTTP/1.1 response written straight onto a socket (upgrade refusals, parser errors). */
export function rawResponse(socket: Duplex, out: JSendOut, reqId: string): void {
  if (socket.destroyed || !socket.writable) return;
  const head = [
    `HTTP/1.1 ${out.status} ${STATUS_CODES[out.status] ?? "Error"}`,
    "content-type: application/json; charset=utf-8",
    `content-length: ${Buffer.byteLength(out.body)}`,
    `x-request-id: ${reqId}`,
    "connection: close",
    ...Object.entries(out.headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${head.join("\r\n")}\r\n\r\n${out.body}`);
}
