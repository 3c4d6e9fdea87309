/** Templates, Dockerfile → rootfs (protocol.md §2.9): validated; builds land with the templates issue. */
import { apiError, validationError } from "@createos-sandbox/protocol";
import type { Route } from "../http/server.js";
import { Fields, pageParams } from "../validate.js";
import { page } from "../views.js";
import { paged, route } from "./common.js";

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

export function templateRoutes(): Route[] {
  return [
    route("GET /v1/templates", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      return { data: page([], 0, limit, offset) };
    }),
    route("POST /v1/templates", { auth: "user", body: "json" }, async (ctx) => {
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
