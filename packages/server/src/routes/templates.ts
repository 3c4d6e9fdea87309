/** Templates, Dockerfile → rootfs (protocol.md §2.9, §3.2). */
import { apiError, validationError } from "@createos-sandbox/protocol";
import { Type } from "@sinclair/typebox";
import type { Ctx, Route } from "../http/server.js";
import { str } from "../schema.js";
import { DOCKERFILE_MAX, DockerfileError } from "../templates/dockerfile.js";
import type { FollowEvent, Templates } from "../templates/service.js";
import type { TemplateRow } from "../templates/store.js";
import { pageParams } from "../validate.js";
import { page } from "../views.js";
import { paged, route } from "./common.js";

const TERMINAL = new Set(["ready", "failed"]);

const CreateBody = Type.Object({
  name: str("name", {
    required: true,
    max: 63,
    re: /^[a-z0-9-]{1,63}$/,
    reMsg: "name must be 1-63 of [a-z0-9-]",
  }),
  dockerfile: Type.Unsafe<string>({
    ...str("dockerfile", { required: true, max: DOCKERFILE_MAX + 1 }),
    grammar: "dockerfile",
  }),
  base: str("base", { max: 200 }),
});

export function templateView(row: TemplateRow, withDockerfile = false) {
  return {
    id: row.id,
    name: row.name,
    base: row.base,
    status: row.status,
    ext4_size_bytes: row.ext4_size_bytes,
    created_at: row.created_at,
    ...(row.built_at ? { built_at: row.built_at } : {}),
    ...(row.status === "failed" && row.status_reason ? { status_reason: row.status_reason } : {}),
    ...(withDockerfile ? { dockerfile: row.dockerfile } : {}),
  };
}

function load(t: Templates, ctx: Ctx): TemplateRow {
  const ref = ctx.params.ref!;
  const row = t.store.find(ctx.principal!.user_id, ref);
  if (!row) throw apiError("template_not_found", { id: ref.slice(0, 100) });
  return row;
}

function checkAttempt(ctx: Ctx): void {
  const attempt = ctx.query.attempt;
  if (attempt !== undefined && !/^\d{1,6}$/.test(attempt))
    throw validationError({ attempt: "attempt must be a positive integer" });
  // one build per template row: attempt 1 is the only one
  if (attempt !== undefined && Number(attempt) !== 1)
    throw apiError("template_not_found", { id: `${ctx.params.ref!.slice(0, 100)} attempt ${attempt}` });
}

export function templateRoutes(templates?: Templates): Route[] {
  const need = (): Templates => {
    if (!templates) throw apiError("not_implemented", { feature: "template builds", issue: "templates" });
    return templates;
  };
  return [
    route("GET /v1/templates", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const { rows, total } = need().store.list(ctx.principal!.user_id, limit, offset);
      return {
        data: page(
          rows.map((r) => templateView(r)),
          total,
          limit,
          offset,
        ),
      };
    }),
    route("POST /v1/templates", { auth: "user", body: "json", schema: { body: CreateBody } }, async (ctx) => {
      const { name, dockerfile, base } = ctx.body as {
        name: string;
        dockerfile: string;
        base?: string | null;
      };
      try {
        const row = need().submit(ctx.principal!.user_id, name, dockerfile, base ?? undefined);
        return { data: templateView(row) };
      } catch (e) {
        if (e instanceof DockerfileError) throw validationError({ dockerfile: e.message });
        throw e;
      }
    }),
    route("GET /v1/templates/:ref", { auth: "user", body: "none" }, async (ctx) => {
      const inc = ctx.query.include;
      if (inc !== undefined && inc !== "dockerfile")
        throw validationError({ include: "include must be dockerfile" });
      return { data: templateView(load(need(), ctx), inc === "dockerfile") };
    }),
    route("GET /v1/templates/:ref/logs", { auth: "user", body: "none" }, async (ctx) => {
      checkAttempt(ctx);
      const t = need();
      const row = load(t, ctx);
      if (ctx.query.follow !== "true") {
        const text = t.store
          .readLog(row.id)
          .map((f) => `${f.line}\n`)
          .join("");
        ctx.reply.hijack();
        // A hijacked reply skips the headers set on it: the id goes in by hand, like every response's.
        ctx.res.writeHead(200, { "content-type": "text/plain; charset=utf-8", "x-request-id": ctx.reqId });
        ctx.res.end(text);
        return undefined;
      }
      ctx.reply.hijack();
      const res = ctx.res;
      res.writeHead(200, {
        "content-type": "application/x-ndjson",
        "cache-control": "no-store",
        "x-request-id": ctx.reqId,
      });
      const write = (e: FollowEvent) => res.write(`${JSON.stringify(e)}\n`);
      // Sync from here to the subscription: no frame can land between the replay and the follow.
      for (const f of t.store.readLog(row.id)) write(f);
      const now = t.store.get(row.id)!;
      if (TERMINAL.has(now.status)) {
        write({ final: true, status: now.status });
        res.end();
        return undefined;
      }
      const off = t.follow(row.id, (e) => {
        write(e);
        if ("final" in e) {
          off();
          res.end();
        }
      });
      res.on("close", off);
      return undefined;
    }),
    route("DELETE /v1/templates/:ref", { auth: "user", body: "none" }, async (ctx) => {
      const t = need();
      const row = load(t, ctx);
      t.delete(row);
      return { data: { ok: true, id: row.id, status: "destroyed" } };
    }),
  ];
}
