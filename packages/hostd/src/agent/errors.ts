/**
 * Errors of the agent client: what the guest reported (AgentError, an errno name) and how each maps to
 * the HostdError codes the control plane understands.
 */
import {
  type AgentErrorCode,
  HostdError,
  type HostdErrorCode,
  type RpcError,
  isAgentErrorCode,
} from "@createos-sandbox/protocol";

/** A failed guest operation: `code` is the errno name the agent reported ("ENOENT" …). */
export class AgentError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly hostdCode: HostdErrorCode,
  ) {
    super(message);
    this.name = "AgentError";
  }
}

const ERRNO_TO_HOSTD: Partial<Record<AgentErrorCode, HostdErrorCode>> = {
  ENOENT: "file_not_found",
  ENOTDIR: "file_not_found",
  EISDIR: "bad_request",
  EINVAL: "bad_request",
  EACCES: "bad_request",
  EROFS: "bad_request",
  EEXIST: "conflict",
  ENOSPC: "capacity",
  ECONNREFUSED: "bad_request",
  ETIMEDOUT: "agent_unreachable",
};

/** The HostdError the control plane understands for any error this client throws. */
export function toHostdError(e: unknown): HostdError {
  if (e instanceof HostdError) return e;
  if (e instanceof AgentError) return new HostdError(e.hostdCode, e.message);
  return new HostdError("internal", e instanceof Error ? e.message : String(e));
}

/** The error of an operation's EXIT (`{"error":"…","code":"ENOENT"}`); no code counts as EIO. */
export function agentError(msg: { error?: unknown; code?: unknown }): AgentError {
  const code = typeof msg.code === "string" ? msg.code : "EIO";
  const hostd = isAgentErrorCode(code) ? ERRNO_TO_HOSTD[code] : undefined;
  return new AgentError(String(msg.error ?? "agent error"), code, hostd ?? "internal");
}

/** The HostdError of an EXIT that reports one, for a stream that was already handed out. */
export function exitHostdError(m: { error?: unknown; code?: unknown }): HostdError | undefined {
  return typeof m.error === "string" ? toHostdError(agentError(m)) : undefined;
}

/** The error of a failed RPC: the agent's code is kept, the host code is always "internal". */
export function rpcError(err: Partial<RpcError>): AgentError {
  return new AgentError(err.message ?? "rpc failed", err.code ?? "EIO", "internal");
}

/** The connection is gone or the agent did not answer in time. */
export function unreachable(msg: string): HostdError {
  return new HostdError("agent_unreachable", msg);
}
