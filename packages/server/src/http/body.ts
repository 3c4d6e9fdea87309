import type { IncomingMessage } from "node:http";
import { apiError } from "@createos-sandbox/protocol";

const JSON_TYPE = /^application\/([\w.+-]+\+)?json\s*(;|$)/i;

/**
 * A JSON request body: undefined when empty (whatever its content type), otherwise it must be declared
 * JSON and parse; a body over `limit` is refused without being read further, and one that has not
 * arrived within `timeoutMs` (a client trickling bytes) is refused with 408.
 */
export function readJson(req: IncomingMessage, limit: number, timeoutMs = 0): Promise<unknown> {
  if (Number(req.headers["content-length"] ?? "0") > limit)
    return Promise.reject(apiError("body_too_large", { limit }));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    let failed = false;
    const fail = (e: unknown) => {
      failed = true;
      clearTimeout(timer);
      reject(e);
    };
    // Cleared by `fail` and at the end: firing, it meets a body that has neither failed nor ended.
    const late = () => req.complete || fail(apiError("request_timeout"));
    const timer = timeoutMs > 0 ? setTimeout(late, timeoutMs).unref() : undefined;
    req.on("data", (c: Buffer) => {
      if (failed) return;
      n += c.length;
      if (n > limit) fail(apiError("body_too_large", { limit }));
      else chunks.push(c);
    });
    req.on("error", fail);
    req.on("close", () => req.complete || failed || fail(apiError("bad_request_line")));
    req.on("end", () => {
      clearTimeout(timer);
      if (failed) return;
      if (n === 0) return resolve(undefined);
      const ct = String(req.headers["content-type"] ?? "");
      if (!JSON_TYPE.test(ct))
        return reject(apiError("unsupported_content_type", { type: ct.slice(0, 100) || "none" }));
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (e) {
        reject(apiError("malformed_json", { detail: (e as Error).message.slice(0, 200) }));
      }
    });
  });
}
