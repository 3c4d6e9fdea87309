/**
 * The two requests that yield a sandbox's view, shared by `CreateosSandboxClient` and `Sandbox`'s static
 * constructors. They live here, not in either class's module, so that neither module imports the other.
 */
import type {
  CreateSandboxRequest,
  CreateSandboxResponse,
  SandboxView,
} from "@createos-sandbox/protocol/api";
import { type CreateosSandboxHttp, encodePath } from "./http.js";
import type { CreateSandboxOptions, RequestOptions } from "./types.js";

/**
 * Creates a sandbox. The POST answers only once the VM is running, so the view is seeded from the
 * response without a follow-up GET (status from the response when the server sends one).
 */
export async function createSandboxView(
  http: CreateosSandboxHttp,
  request: CreateSandboxRequest,
  options: CreateSandboxOptions,
): Promise<SandboxView> {
  const { wait: _wait, waitTimeoutMs: _waitTimeoutMs, ...requestOptions } = options;
  const created = await http.request<CreateSandboxResponse>("POST", "/v1/sandboxes", {
    ...requestOptions,
    body: request,
  });
  return {
    ...created,
    status: created.status ?? "running",
    ingress_enabled: created.ingress_enabled ?? request.ingress_enabled ?? false,
    created_at: created.created_at ?? new Date().toISOString(),
  };
}

export function getSandboxView(
  http: CreateosSandboxHttp,
  id: string,
  options: RequestOptions,
): Promise<SandboxView> {
  return http.request<SandboxView>("GET", `/v1/sandboxes/${encodePath(id)}`, options);
}
