import { ApiError, type HostdErrorCode, apiError, validationError } from "@createos-sandbox/protocol";

/** HostdError is matched by shape: the engine may be loaded from another copy of the protocol package. */
export function hostdCode(err: unknown): HostdErrorCode | undefined {
  if (err && typeof err === "object" && (err as Error).name === "HostdError") {
    return (err as { code?: HostdErrorCode }).code;
  }
  return undefined;
}

/** What the client sees when the engine refuses: the engine's words for 4xx, a catalog row for the rest. */
export function mapHostdError(
  err: unknown,
  ctx: { id?: string; action?: string; path?: string } = {},
): unknown {
  if (err instanceof ApiError) return err;
  const code = hostdCode(err);
  const msg = err instanceof Error ? err.message : String(err);
  switch (code) {
    case "not_found":
    case "conflict":
      return apiError("state_conflict", {
        action: ctx.action ?? "use",
        status: `not in that state on its host (${msg})`,
      });
    case "bad_request":
      return validationError({ request: msg });
    case "file_not_found":
      return apiError("file_not_found", { path: ctx.path ?? "" });
    case "too_large":
      return apiError("engine_too_large", { message: msg });
    case "capacity":
      return apiError("host_capacity", { reason: msg });
    case "not_ready":
    case "unreachable":
    case "unauthorized":
      // The host daemon is busy, down or misconfigured: a retry after Retry-After may succeed.
      return apiError("host_unavailable", { reason: msg });
    case "agent_unreachable":
      return apiError("agent_unreachable", { reason: msg });
    case "busy":
      return apiError("sandbox_busy", { reason: msg });
    default:
      return err;
  }
}
