/**
 * `GET /v1/sandboxes/:id/shell-ws`: the guest PTY over a WebSocket, for browsers (docs/console.md).
 * Binary messages client → server are keystrokes, server → client raw PTY output; a text message
 * `{"type":"resize","rows":R,"cols":C}` resizes; close 1000 when the shell ends. Auth, tenant and state are
 * checked before the handshake, so a refusal is an ordinary JSend response.
 */
import type { IncomingMessage } from "node:http";
import { apiError } from "@createos-sandbox/protocol";
import { WebSocketServer } from "ws";
import type { Route, UpgradeCtx } from "../http/server.js";
import { type App, route } from "./common.js";
import { linkShell, openShell, typeInto } from "./pty.js";

/** The subprotocol the server selects; a browser offers it next to its bearer (never echoed back). */
export const SHELL_WS_PROTOCOL = "createos-sandbox.shell.v1";
const MAX_MESSAGE = 1024 * 1024;
/** Output sends not yet on the wire before the PTY is paused: a slow browser must not grow our memory. */
const MAX_UNSENT = 64;
const KEY_RE = /^[+/0-9A-Za-z]{22}==$/;

/**
 * A browser always sends Origin on a WebSocket; it must be this server's own (the Host it asked for).
 * Clients that are not browsers send none and prove themselves by their key alone.
 */
export function originAllowed(origin: string | undefined, host: string | undefined): boolean {
  if (origin === undefined) return true;
  try {
    const u = new URL(origin);
    return (u.protocol === "http:" || u.protocol === "https:") && u.host === host;
  } catch {
    return false;
  }
}

export function shellWsRoutes(app: App): Route[] {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_MESSAGE,
    perMessageDeflate: false,
    handleProtocols: (offered) => (offered.has(SHELL_WS_PROTOCOL) ? SHELL_WS_PROTOCOL : false),
  });
  // The library writes the 101 itself: the request's id is added to it here, like on every response.
  const reqIds = new WeakMap<IncomingMessage, string>();
  wss.on("headers", (headers, req) => {
    const id = reqIds.get(req);
    if (id) headers.push(`x-request-id: ${id}`);
  });
  const upgrade = async (u: UpgradeCtx): Promise<void> => {
    const h = u.req.headers;
    if (!originAllowed(h.origin, h.host))
      throw apiError("origin_not_allowed", { origin: String(h.origin).slice(0, 200) });
    if (
      u.req.method !== "GET" ||
      h["sec-websocket-version"] !== "13" ||
      !KEY_RE.test(String(h["sec-websocket-key"]))
    )
      throw apiError("websocket_required");
    const opened = await openShell(app, u);
    if (!opened) return;
    const { row, pty, claim } = opened;
    const socket = u.accept();
    let linked = false;
    // A handshake the library refuses destroys the socket without calling back: the PTY must not linger.
    socket.once("close", () => {
      if (linked) return;
      pty.stream.destroy();
      claim.release();
    });
    reqIds.set(u.req.raw, u.reqId);
    wss.handleUpgrade(u.req.raw, socket as never, u.head, (ws) => {
      linked = true;
      const close = linkShell(
        app,
        row,
        pty,
        claim,
        (exited) => {
          if (ws.readyState === ws.OPEN)
            ws.close(exited ? 1000 : 1011, exited ? "shell exited" : "shell failed");
          else ws.terminate();
        },
        1000,
      );
      let unsent = 0;
      pty.stream.on("data", (d: Buffer) => {
        if (++unsent >= MAX_UNSENT) pty.stream.pause();
        ws.send(d, { binary: true }, () => {
          if (--unsent < MAX_UNSENT / 2 && pty.stream.isPaused()) pty.stream.resume();
        });
      });
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        if (isBinary) {
          typeInto(
            pty,
            data,
            () => ws.pause(),
            () => ws.resume(),
          );
        } else {
          const m = parseResize(data.toString("utf8"));
          if (m) pty.resize(m.rows, m.cols);
        }
        void app.sandboxes.touch(row.id);
      });
      ws.on("close", () => close(false));
      ws.on("error", () => close(false));
    });
  };
  return [
    route("GET /v1/sandboxes/:id/shell-ws", {
      auth: "runtime",
      body: "none",
      upgrade,
      upgradeProto: "websocket",
    }),
  ];
}

/** `{"type":"resize","rows":R,"cols":C}` with 1–65535 each, or undefined (other text is ignored). */
export function parseResize(text: string): { rows: number; cols: number } | undefined {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof m !== "object" || m === null) return undefined;
  const { type, rows, cols } = m as Record<string, unknown>;
  const ok = (n: unknown): n is number => Number.isInteger(n) && (n as number) > 0 && (n as number) < 65536;
  return type === "resize" && ok(rows) && ok(cols) ? { rows, cols } : undefined;
}
