/**
 * Liveness and readiness probes (protocol.md §2.1): no auth, so load balancers can ask. Their reasons are
 * fixed phrases (hosterr.ts `publicReason`); the hosts' own words are logged when they change.
 */
import type { api } from "@createos-sandbox/protocol";
import type { Route } from "../http/server.js";
import { type App, route } from "./common.js";

export function healthRoutes(app: App): Route[] {
  let lastDetail = "";
  const logDetail = () => {
    const detail = app.hosts
      .all()
      .map((h) => {
        const down = h.healthy ? undefined : `unreachable (${h.lastError ?? "no answer yet"})`;
        return `${h.id}: ${[h.notReady, down].filter(Boolean).join(", ") || "ready"}`;
      })
      .join("; ");
    if (detail !== lastDetail) app.log.info("not ready", { detail });
    lastDetail = detail;
  };
  return [
    route("GET /healthz", { auth: "none", body: "none" }, async () => ({ data: { up: true } })),
    route("GET /readyz", { auth: "none", body: "none" }, async () => {
      const last = app.schedulerLastOk();
      const ago = last === undefined ? undefined : Math.round(performance.now() - last);
      // Ready while some host can take new sandboxes; the reason names every host's state otherwise.
      const reason = app.hosts.anyReady() ? undefined : app.hosts.notReadyReason();
      const stale = ago === undefined || ago > Math.max(60_000, app.cfg.schedulerIntervalMs * 6);
      if (reason || stale) {
        logDetail();
        const data: api.ReadyzResponse = {
          ready: false,
          reason: reason ?? "scheduler has not completed a pass recently",
        };
        if (ago !== undefined) data.scheduler_last_ok_ms_ago = ago;
        return { status: 503, data, headers: { "retry-after": "5" } };
      }
      lastDetail = "";
      return { data: { ready: true, scheduler_last_ok_ms_ago: ago } };
    }),
  ];
}
