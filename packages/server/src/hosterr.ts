/**
 * What a client is told when the engine refuses. Host daemons word their errors for operators — VM dirs,
 * socket paths, command lines, free memory — so clients get a catalog row with a fixed reason, and the
 * host's words ride along as `hostDetail` for the request's log line only (http/server.ts).
 */
import { ApiError, type HostdErrorCode, apiError, validationError } from "@createos-sandbox/protocol";

/** HostdError is matched by shape: the engine may be loaded from another copy of the protocol package. */
export function hostdCode(err: unknown): HostdErrorCode | undefined {
  if (err && typeof err === "object" && (err as Error).name === "HostdError") {
    return (err as { code?: HostdErrorCode }).code;
  }
  return undefined;
}

/** The host-facing reason of a capacity refusal, as a fixed phrase a client may see. */
function capacityReason(msg: string): string {
  if (/no space left/i.test(msg)) return "the sandbox's disk is full";
  if (/network slot/i.test(msg)) return "no free network slot on this host";
  const what = /free disk/i.test(msg) ? "disk" : /memory|ram/i.test(msg) ? "memory" : undefined;
  if (!what) return "the host is out of capacity";
  const to = / to ((?:[a-z]+ ?){1,6})(?::|$|\()/i.exec(msg)?.[1]?.trim();
  return `not enough free ${what} on this host${to ? ` to ${to}` : ""}`;
}

function busyReason(msg: string): string {
  return /buffer/i.test(msg)
    ? "its buffered exec output is at its cap; use stream=true or retry"
    : "too many streams are open on it";
}

/** What the client sees when the engine refuses: a catalog row, the host's message kept for the log. */
export function mapHostdError(
  err: unknown,
  ctx: { id?: string; action?: string; path?: string } = {},
): unknown {
  if (err instanceof ApiError) return err;
  const code = hostdCode(err);
  if (code === undefined || code === "internal") return err;
  const msg = err instanceof Error ? err.message : String(err);
  return Object.assign(toCatalog(code, msg, ctx), { hostDetail: msg });
}

/**
 * What a row's `status_reason` may say about a failed engine call: the message of the catalog row the
 * client would get (mapHostdError), never the host's words; those go to the log with the row's id.
 */
export function publicMessage(
  err: unknown,
  ctx: { id?: string; action?: string; path?: string } = {},
): string {
  const mapped = mapHostdError(err, ctx);
  return (mapped instanceof ApiError ? mapped : apiError("internal")).message;
}

function toCatalog(code: HostdErrorCode, msg: string, ctx: { action?: string; path?: string }): ApiError {
  switch (code) {
    case "not_found":
    case "conflict":
      return apiError("state_conflict", {
        action: ctx.action ?? "use",
        status: "not in that state on its host",
      });
    case "bad_request":
      // About the request itself (a path in the guest, a disk that cannot shrink): the caller's to fix.
      return validationError({ request: msg.slice(0, 300) });
    case "file_not_found":
      return apiError("file_not_found", { path: ctx.path ?? "" });
    case "too_large":
      return apiError("engine_too_large", { message: "the transfer exceeds the host's limit" });
    case "capacity":
      return apiError("host_capacity", { reason: capacityReason(msg) });
    case "not_ready":
      return apiError("host_unavailable", { reason: "the sandbox's host is not ready" });
    case "unauthorized":
      return apiError("host_unavailable", { reason: "the sandbox's host refused the control plane" });
    case "unreachable":
      return apiError("host_unavailable", { reason: "the sandbox's host did not answer" });
    case "agent_unreachable":
      return apiError("agent_unreachable", { reason: "it did not answer in time" });
    case "busy":
      return apiError("sandbox_busy", { reason: busyReason(msg) });
    default:
      return apiError("internal");
  }
}

/**
 * A host's not-ready or unhealthy reason as `/readyz` and 503s show it: fixed phrases (image names
 * kept), never the underlying error, which names paths, command lines and free memory.
 */
export function publicReason(raw: string | undefined): string {
  if (!raw) return "not ready";
  const image = /default image ([\w.-]{1,60}(?::[\w.-]{1,20})?)/.exec(raw)?.[1];
  if (/^building default image/.test(raw)) return `building default image ${image ?? ""}`.trim();
  if (/failed to build/.test(raw)) return `default image ${image ?? ""} failed to build (see the server log)`;
  if (/^connecting/.test(raw)) return "connecting to the host daemon";
  if (/unreachable/.test(raw)) return "host daemon is unreachable";
  if (/failed to start/.test(raw)) return "host daemon failed to start (see the server log)";
  if (/^no image is built yet/.test(raw)) return "no image is built yet";
  if (/accelerator/.test(raw)) return "accelerator probe failed (see the server log)";
  const fixed = ["host daemon not attached yet", "no host daemon is loaded", "no host daemon is configured"];
  if (fixed.includes(raw) || /^no engine: CREATEOS_SANDBOX_HOSTD=none$/.test(raw)) return raw;
  return "not ready (see the server log)";
}

/** A host's id as clients see it: a daemon's name, or its position while only its URL (a path) is known. */
export function publicHostId(id: string, index: number): string {
  return /^[A-Za-z0-9._-]{1,64}$/.test(id) ? id : `host ${index + 1}`;
}
