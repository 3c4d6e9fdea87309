/** Who the caller is and what it holds (protocol.md §2.1). */
import type { Route } from "../http/server.js";
import { type App, route, userOf } from "./common.js";

export function identityRoutes(app: App): Route[] {
  return [
    route("GET /v1/whoami", { auth: "user", body: "none" }, async (ctx) => {
      const c = await app.store.statusCounts(userOf(ctx));
      const total = Object.entries(c).reduce((n, [s, k]) => (s === "destroyed" ? n : n + k), 0);
      const running = c.running ?? 0;
      const paused = c.paused ?? 0;
      return {
        data: { user_id: userOf(ctx), stats: { running, paused, other: total - running - paused, total } },
      };
    }),
  ];
}
