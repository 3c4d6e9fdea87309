import { apiError } from "@createos-sandbox/protocol";
import type { RootfsInfo } from "../catalog.js";
import type { ServerConfig } from "../config.js";
import type { Disks } from "../disks/service.js";
import type { Hosts } from "../hosts.js";
import type { Ctx, Handler, Route } from "../http/server.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Sandboxes } from "../sandboxes.js";
import type { NetworkRow, SandboxRow, Store } from "../store/types.js";
import type { Templates } from "../templates/service.js";
import type { TenantStreams } from "../tenant-streams.js";
import { canonicalNetworkId, canonicalSandboxId } from "../ulid.js";
import { PageQuery } from "../validate.js";

export interface App {
  cfg: ServerConfig;
  store: Store;
  log: Logger;
  metrics: Metrics;
  hosts: Hosts;
  sandboxes: Sandboxes;
  /** S3 disk registrations and attachments. */
  disks: Disks;
  /** Per-tenant caps on open streams and buffered exec output (429 past them). */
  tenantStreams: TenantStreams;
  /** Template builds and the images they made (absent in tests that build no templates). */
  templates?: Templates;
  /** The image catalog (engine's when loaded). */
  images(): Promise<RootfsInfo[]>;
  schedulerLastOk(): number | undefined;
  /** Forget cached credentials of a sandbox's access token (after rotate/delete). */
  forgetSandboxCredentials(sandboxId: string): void;
}

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/**
 * One route, written as the protocol writes it: `route("GET /v1/shapes", { auth: "none", body: "none" },
 * handler)`. Keeps each resource's table of routes to one line a route plus its handler.
 */
export function route(
  spec: `${Method} /${string}`,
  opts: Pick<Route, "auth" | "body" | "schema" | "check" | "upgrade" | "upgradeProto">,
  handler?: Handler,
): Route {
  const at = spec.indexOf(" ");
  return { method: spec.slice(0, at), pattern: spec.slice(at + 1), ...opts, ...(handler ? { handler } : {}) };
}

/** The query schema of list routes. */
export const paged = { querystring: PageQuery };

/** The caller's sandbox by path id, or 404 — also for another tenant's id and for a token of another sandbox. */
export async function loadSandbox(
  app: App,
  ctx: Pick<Ctx, "params" | "principal" | "logFields">,
  param = "id",
): Promise<SandboxRow> {
  const raw = ctx.params[param] ?? "";
  const id = canonicalSandboxId(raw);
  const notFound = () => apiError("sandbox_not_found", { id: raw.slice(0, 100) });
  if (!id) throw notFound();
  const p = ctx.principal!;
  if (p.sandbox_id && p.sandbox_id !== id) throw notFound();
  const row = await app.store.getSandbox(id);
  if (!row || row.user_id !== p.user_id) throw notFound();
  ctx.logFields.sandbox_id = id;
  return row;
}

/** Runtime calls (exec, files, shell, tunnel) need a running VM. */
export function requireRunning(row: SandboxRow, action: string): void {
  if (row.status !== "running") throw apiError("state_conflict", { action, status: row.status });
}

/** The user the request acts for (routes with `auth: "user"` or `"runtime"` always have a principal). */
export function userOf(ctx: Pick<Ctx, "principal">): string {
  return ctx.principal!.user_id;
}

/** The caller is the admin user: the operator's account (`createos-sandbox serve` ensures it). */
export async function isAdmin(app: App, ctx: Pick<Ctx, "principal">): Promise<boolean> {
  return (await app.store.getUserByName("admin"))?.id === userOf(ctx);
}

/** A network of this user by id (`net-`/`net_`) or name. */
export function findNetwork(app: App, userId: string, ref: string): NetworkRow | undefined {
  return app.sandboxes.overlay.nets.get(userId, canonicalNetworkId(ref) ?? ref);
}

/** findNetwork(), or the 404 another tenant's network and an unknown one both get. */
export function mustFindNetwork(app: App, userId: string, ref: string): NetworkRow {
  const n = findNetwork(app, userId, ref);
  if (!n) throw apiError("network_not_found", { id: ref.slice(0, 100) });
  return n;
}
