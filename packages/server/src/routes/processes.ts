/**
 * Managed processes and the WebSocket shell (protocol.md §2.4, §3.5): no engine support yet, so each
 * route checks the sandbox (404 stays 404) and then answers `not_implemented`.
 */
import { apiError } from "@createos-sandbox/protocol";
import type { Route } from "../http/server.js";
import { type App, loadSandbox, route } from "./common.js";

const SUFFIXES = [
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
] as const;

export function processRoutes(app: App): Route[] {
  return SUFFIXES.map(([method, suffix]) =>
    route(
      `${method} /v1/sandboxes/:id${suffix}`,
      { auth: "runtime", body: method === "POST" ? "json" : "none" },
      async (ctx) => {
        await loadSandbox(app, ctx);
        throw apiError("not_implemented", {
          feature:
            suffix === "/shell-ws"
              ? "the WebSocket shell (use POST /shell with Upgrade: tcp-tunnel)"
              : "managed processes",
          issue: suffix === "/shell-ws" ? "browser terminal" : "managed processes",
        });
      },
    ),
  );
}
