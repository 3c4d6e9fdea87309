/** What a sandbox can be made of: shapes and root filesystems (protocol.md §2.1). */
import type { api } from "@createos-sandbox/protocol";
import { SHAPES } from "../catalog.js";
import type { Route } from "../http/server.js";
import { pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, paged, route } from "./common.js";

export function catalogRoutes(app: App): Route[] {
  return [
    route("GET /v1/shapes", { auth: "none", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      return { data: page(SHAPES.slice(offset, offset + limit), SHAPES.length, limit, offset) };
    }),
    route("GET /v1/rootfs", { auth: "none", body: "none" }, async () => {
      const images = await app.images();
      const def = images.find((i) => i.default)?.name ?? images[0]?.name ?? "devbox:1";
      const data: api.RootfsData = {
        rootfs: images.map((i) => i.name),
        default: def,
        entries: images.map((i) => ({ name: i.name, description: i.description })),
      };
      return { data };
    }),
  ];
}
