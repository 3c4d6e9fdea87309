/** Health, identity, catalog, hosts, networks, disks, templates (protocol.md §2.1, §2.6–2.9). */
import { apiError, validationError } from "@createos-sandbox/protocol";
import type { api } from "@createos-sandbox/protocol";
import { SHAPES } from "../catalog.js";
import type { Route } from "../http/core.js";
import { newNetworkId } from "../ulid.js";
import { Fields, RESOURCE_NAME_RE, absolutePathError, pageParams } from "../validate.js";
import { networkView, page } from "../views.js";
import { type App, findNetwork, loadSandbox, requireRunning } from "./common.js";
import { checkDiskAttachment } from "./sandboxes.js";

const TEMPLATE_BASES = ["nodeops/sandbox:debian", "nodeops/sandbox:alpine"];
const DOCKERFILE_MAX = 64 * 1024;

/** Dockerfile rules of protocol.md §2.9; returns the first violation. */
export function dockerfileError(df: string): string | undefined {
  if (Buffer.byteLength(df) > DOCKERFILE_MAX) return `dockerfile exceeds ${DOCKERFILE_MAX} bytes`;
  const lines = df
    .replace(/\\\r?\n/g, " ")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const froms = lines.filter((l) => /^FROM\s/i.test(l));
  if (froms.length !== 1) return "dockerfile must have exactly one FROM";
  const from = froms[0]!.split(/\s+/);
  if (from.length !== 2 || from[1]!.includes("$"))
    return "FROM must name one allowlisted base without ARG substitution";
  if (!TEMPLATE_BASES.includes(from[1]!)) return `FROM base must be one of ${TEMPLATE_BASES.join(", ")}`;
  if (!/^FROM\s/i.test(lines[0]!)) return "FROM must be the first instruction";
  if (lines.some((l) => /^(COPY|ADD)\s/i.test(l)))
    return "COPY and ADD are not allowed (there is no build context)";
  return undefined;
}

export function miscRoutes(app: App): Route[] {
  const user = (ctx: { principal?: { user_id: string } }) => ctx.principal!.user_id;
  return [
    {
      method: "GET",
      pattern: "/healthz",
      auth: "none",
      body: "none",
      handler: async () => ({ data: { up: true } }),
    },
    {
      method: "GET",
      pattern: "/readyz",
      auth: "none",
      body: "none",
      handler: async () => {
        const last = app.schedulerLastOk();
        const ago = last === undefined ? undefined : Math.round(performance.now() - last);
        const reason = app.host.notReady ?? (app.host.daemon ? undefined : "no host daemon loaded");
        const stale = ago === undefined || ago > Math.max(60_000, app.cfg.schedulerIntervalMs * 6);
        if (reason || stale) {
          const data: api.ReadyzResponse = {
            ready: false,
            reason: reason ?? "scheduler has not completed a pass recently",
          };
          if (ago !== undefined) data.scheduler_last_ok_ms_ago = ago;
          return { status: 503, data, headers: { "retry-after": "5" } };
        }
        return { data: { ready: true, scheduler_last_ok_ms_ago: ago } };
      },
    },
    {
      method: "GET",
      pattern: "/v1/whoami",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const c = await app.store.statusCounts(user(ctx));
        const total = Object.entries(c).reduce((n, [s, k]) => (s === "destroyed" ? n : n + k), 0);
        const running = c.running ?? 0;
        const paused = c.paused ?? 0;
        return {
          data: { user_id: user(ctx), stats: { running, paused, other: total - running - paused, total } },
        };
      },
    },
    {
      method: "GET",
      pattern: "/v1/shapes",
      auth: "none",
      body: "none",
      handler: async (ctx) => {
        const { limit, offset } = pageParams(ctx.query);
        return { data: page(SHAPES.slice(offset, offset + limit), SHAPES.length, limit, offset) };
      },
    },
    {
      method: "GET",
      pattern: "/v1/rootfs",
      auth: "none",
      body: "none",
      handler: async () => {
        const images = await app.images();
        const def = images.find((i) => i.default)?.name ?? images[0]?.name ?? "devbox:1";
        const data: api.RootfsData = {
          rootfs: images.map((i) => i.name),
          default: def,
          entries: images.map((i) => ({ name: i.name, description: i.description })),
        };
        return { data };
      },
    },
    {
      method: "GET",
      pattern: "/v1/hosts",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const { limit, offset } = pageParams(ctx.query);
        const d = app.host.daemon;
        const hosts: api.HostPublic[] = [];
        if (d) {
          const info = await d.info();
          const h: api.HostPublic = {
            id: info.id,
            status: info.status,
            free_mib: info.free_mib,
            vm_count: info.vm_count,
          };
          if (info.rootfses.length) h.rootfses = info.rootfses;
          hosts.push(h);
        }
        return { data: page(hosts.slice(offset, offset + limit), hosts.length, limit, offset) };
      },
    },

    // ── networks (rows are real; overlay wiring lands with the networking issue) ──
    {
      method: "GET",
      pattern: "/v1/networks",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const { limit, offset } = pageParams(ctx.query);
        const res = await app.store.listNetworks(user(ctx), { limit, offset });
        return {
          data: page(
            res.rows.map((n) => networkView(n, { member_count: n.member_count })),
            res.total,
            limit,
            offset,
          ),
        };
      },
    },
    {
      method: "POST",
      pattern: "/v1/networks",
      auth: "user",
      body: "json",
      handler: async (ctx) => {
        const f = new Fields(ctx.body);
        const name = f.str("name", {
          required: true,
          max: 63,
          re: RESOURCE_NAME_RE,
          reMsg: "name must match ^[a-z0-9][a-z0-9-]{0,62}$",
        });
        f.done();
        if (await app.store.getNetwork(user(ctx), name!))
          throw apiError("name_taken", { kind: "network", name: name! });
        if ((await app.store.countNetworks(user(ctx))) >= app.cfg.maxNetworksPerTenant) {
          throw apiError("limit_networks", { limit: app.cfg.maxNetworksPerTenant });
        }
        const row = {
          id: newNetworkId(),
          user_id: user(ctx),
          name: name!,
          created_at: new Date().toISOString(),
        };
        try {
          await app.store.createNetwork(row);
        } catch (e) {
          if (/UNIQUE/.test(String(e))) throw apiError("name_taken", { kind: "network", name: name! });
          throw e;
        }
        return { data: networkView(row, { member_count: 0 }) };
      },
    },
    {
      method: "GET",
      pattern: "/v1/networks/:ref",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const ref = ctx.params.ref!;
        const n = await findNetwork(app, user(ctx), ref);
        if (!n) throw apiError("network_not_found", { id: ref.slice(0, 100) });
        return { data: networkView(n, { members: await app.store.networkMembers(n.id) }) };
      },
    },
    {
      method: "DELETE",
      pattern: "/v1/networks/:ref",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const ref = ctx.params.ref!;
        const n = await findNetwork(app, user(ctx), ref);
        if (!n) throw apiError("network_not_found", { id: ref.slice(0, 100) });
        const members = await app.store.networkMembers(n.id);
        if (members.length) throw apiError("network_in_use", { id: n.id, count: members.length });
        await app.store.deleteNetwork(n.id);
        return { data: { ok: true } };
      },
    },
    {
      method: "POST",
      pattern: "/v1/sandboxes/:id/networks",
      auth: "user",
      body: "json",
      handler: async (ctx) => {
        const f = new Fields(ctx.body);
        const ref = f.str("id", { required: true, max: 100 });
        f.done();
        const row = await loadSandbox(app, ctx);
        const n = await findNetwork(app, user(ctx), ref!);
        if (!n) throw apiError("network_not_found", { id: ref! });
        requireRunning(row, "attach a network to");
        await app.store.addNetworkMember(n.id, row.id);
        return { data: { ok: true } };
      },
    },
    {
      method: "DELETE",
      pattern: "/v1/sandboxes/:id/networks/:net",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const row = await loadSandbox(app, ctx);
        const ref = ctx.params.net!;
        const n = await findNetwork(app, user(ctx), ref);
        if (!n || !(await app.store.removeNetworkMember(n.id, row.id))) {
          throw apiError("network_not_found", { id: `${ref.slice(0, 100)} (attached to ${row.id})` });
        }
        return { data: { ok: true } };
      },
    },

    // ── disks: validated, then refused until the disks issue lands ──
    {
      method: "GET",
      pattern: "/v1/disks",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        pageParams(ctx.query);
        throw apiError("disks_not_configured");
      },
    },
    {
      method: "POST",
      pattern: "/v1/disks",
      auth: "user",
      body: "json",
      handler: async (ctx) => {
        const f = new Fields(ctx.body);
        f.str("name", {
          required: true,
          max: 63,
          re: RESOURCE_NAME_RE,
          reMsg: "name must match ^[a-z0-9][a-z0-9-]{0,62}$",
        });
        const kind = f.str("kind", { required: true });
        if (kind && kind !== "s3") f.fail("kind", `unknown kind: ${kind.slice(0, 50)} (only s3)`);
        checkS3(f);
        f.done();
        throw apiError("disks_not_configured");
      },
    },
    {
      method: "GET",
      pattern: "/v1/disks/:ref",
      auth: "user",
      body: "none",
      handler: async () => {
        throw apiError("disks_not_configured");
      },
    },
    {
      method: "PATCH",
      pattern: "/v1/disks/:ref",
      auth: "user",
      body: "json",
      handler: async (ctx) => {
        const f = new Fields(ctx.body);
        checkCredentials(f);
        f.done();
        throw apiError("disks_not_configured");
      },
    },
    {
      method: "DELETE",
      pattern: "/v1/disks/:ref",
      auth: "user",
      body: "none",
      handler: async () => {
        throw apiError("disks_not_configured");
      },
    },
    {
      method: "GET",
      pattern: "/v1/sandboxes/:id/disks",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const { limit, offset } = pageParams(ctx.query);
        await loadSandbox(app, ctx);
        // No disk can be attached before the disks issue: the true answer is an empty page.
        return { data: page([], 0, limit, offset) };
      },
    },
    {
      method: "POST",
      pattern: "/v1/sandboxes/:id/disks",
      auth: "user",
      body: "json",
      handler: async (ctx) => {
        const f = new Fields(ctx.body);
        checkDiskAttachment(f, f.raw, "disk");
        f.done();
        await loadSandbox(app, ctx);
        throw apiError("disks_not_configured");
      },
    },
    {
      method: "DELETE",
      pattern: "/v1/sandboxes/:id/disks/:disk",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const err = absolutePathError(ctx.query.get("mount_path"), "mount_path");
        if (err) throw validationError(err);
        await loadSandbox(app, ctx);
        throw apiError("disks_not_configured");
      },
    },

    // ── managed processes and the WebSocket shell: no engine support yet; the sandbox is still checked ──
    ...(
      [
        ["POST", "/processes"],
        ["GET", "/processes"],
        ["GET", "/processes/:pid"],
        ["DELETE", "/processes/:pid"],
        ["GET", "/processes/:pid/connect"],
        ["POST", "/processes/:pid/input"],
        ["POST", "/processes/:pid/stdin/close"],
        ["POST", "/processes/:pid/resize"],
        ["POST", "/processes/:pid/signal"],
        ["GET", "/processes/:pid/wait"],
        ["GET", "/shell-ws"],
      ] as const
    ).map(
      ([method, suffix]): Route => ({
        method,
        pattern: `/v1/sandboxes/:id${suffix}`,
        auth: "runtime",
        body: method === "POST" ? "json" : "none",
        handler: async (ctx) => {
          await loadSandbox(app, ctx);
          throw apiError("not_implemented", {
            feature:
              suffix === "/shell-ws"
                ? "the WebSocket shell (use POST /shell with Upgrade: tcp-tunnel)"
                : "managed processes",
            issue: suffix === "/shell-ws" ? "browser terminal" : "managed processes",
          });
        },
      }),
    ),

    // ── templates: validated; builds land with the templates issue ──
    {
      method: "GET",
      pattern: "/v1/templates",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        const { limit, offset } = pageParams(ctx.query);
        return { data: page([], 0, limit, offset) };
      },
    },
    {
      method: "POST",
      pattern: "/v1/templates",
      auth: "user",
      body: "json",
      handler: async (ctx) => {
        const f = new Fields(ctx.body);
        f.str("name", {
          required: true,
          max: 63,
          re: /^[a-z0-9-]{1,63}$/,
          reMsg: "name must be 1-63 of [a-z0-9-]",
        });
        const df = f.str("dockerfile", { required: true, max: DOCKERFILE_MAX + 1 });
        if (df !== undefined) {
          const err = dockerfileError(df);
          if (err) f.fail("dockerfile", err);
        }
        f.str("base", { max: 200 });
        f.done();
        throw apiError("not_implemented", { feature: "template builds", issue: "templates" });
      },
    },
    ...(["", "/logs"] as const).map(
      (suffix): Route => ({
        method: "GET",
        pattern: `/v1/templates/:ref${suffix}`,
        auth: "user",
        body: "none",
        handler: async (ctx) => {
          const inc = ctx.query.get("include");
          if (suffix === "" && inc !== null && inc !== "dockerfile") {
            throw validationError({ include: "include must be dockerfile" });
          }
          const attempt = ctx.query.get("attempt");
          if (suffix && attempt !== null && !/^\d{1,6}$/.test(attempt)) {
            throw validationError({ attempt: "attempt must be a positive integer" });
          }
          throw apiError("template_not_found", { id: ctx.params.ref!.slice(0, 100) });
        },
      }),
    ),
    {
      method: "DELETE",
      pattern: "/v1/templates/:ref",
      auth: "user",
      body: "none",
      handler: async (ctx) => {
        throw apiError("template_not_found", { id: ctx.params.ref!.slice(0, 100) });
      },
    },
  ];
}

function checkCredentials(f: Fields): void {
  const c = f.raw.credentials;
  if (typeof c !== "object" || c === null || Array.isArray(c)) {
    f.fail("credentials", "credentials {access_key, secret_key} are required");
    return;
  }
  const { access_key, secret_key } = c as Record<string, unknown>;
  if (typeof access_key !== "string" || !access_key)
    f.fail("credentials.access_key", "access_key is required");
  if (typeof secret_key !== "string" || !secret_key)
    f.fail("credentials.secret_key", "secret_key is required");
}

function checkS3(f: Fields): void {
  const c = f.raw.config;
  if (typeof c !== "object" || c === null || Array.isArray(c))
    f.fail("config", "config {bucket, endpoint} is required");
  else {
    const { bucket, endpoint, region, use_path_style } = c as Record<string, unknown>;
    if (typeof bucket !== "string" || !/^[a-z0-9][a-z0-9.-]{1,62}$/.test(bucket)) {
      f.fail("config.bucket", "bucket must be a valid S3 bucket name");
    }
    let okUrl = false;
    try {
      okUrl = typeof endpoint === "string" && /^https?:$/.test(new URL(endpoint).protocol);
    } catch {
      okUrl = false;
    }
    if (!okUrl) f.fail("config.endpoint", "endpoint must be an http(s) URL");
    if (region !== undefined && typeof region !== "string")
      f.fail("config.region", "region must be a string");
    if (use_path_style !== undefined && typeof use_path_style !== "boolean") {
      f.fail("config.use_path_style", "use_path_style must be true or false");
    }
  }
  checkCredentials(f);
}
