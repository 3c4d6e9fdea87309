/** Templates, Dockerfile → rootfs (protocol.md §2.9): validated; builds land with the templates issue. */
import { apiError, validationError } from "@createos-sandbox/protocol";
import { Type } from "@sinclair/typebox";
import type { Route } from "../http/server.js";
import { str } from "../schema.js";
import { DOCKERFILE_MAX, pageParams } from "../validate.js";
import { page } from "../views.js";
import { paged, route } from "./common.js";

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

export function templateRoutes(): Route[] {
  return [
    route("GET /v1/templates", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      return { data: page([], 0, limit, offset) };
    }),
    route("POST /v1/templates", { auth: "user", body: "json", schema: { body: CreateBody } }, async () => {
      throw apiError("not_implemented", { feature: "template builds", issue: "templates" });
    }),
    ...(["", "/logs"] as const).map((suffix) =>
      route(`GET /v1/templates/:ref${suffix}`, { auth: "user", body: "none" }, async (ctx) => {
        const inc = ctx.query.include;
        if (suffix === "" && inc !== undefined && inc !== "dockerfile") {
          throw validationError({ include: "include must be dockerfile" });
        }
        const attempt = ctx.query.attempt;
        if (suffix && attempt !== undefined && !/^\d{1,6}$/.test(attempt)) {
          throw validationError({ attempt: "attempt must be a positive integer" });
        }
        throw apiError("template_not_found", { id: ctx.params.ref!.slice(0, 100) });
      }),
    ),
    route("DELETE /v1/templates/:ref", { auth: "user", body: "none" }, async (ctx) => {
      throw apiError("template_not_found", { id: ctx.params.ref!.slice(0, 100) });
    }),
  ];
}
