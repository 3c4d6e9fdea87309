/** The guest-PTY half both shell routes share: `Upgrade: tcp-tunnel` (shell) and WebSocket (shell-ws). */
import type { PtySession } from "@createos-sandbox/protocol";
import { mapHostdError } from "../hosterr.js";
import type { UpgradeCtx } from "../http/server.js";
import type { SandboxRow } from "../store/types.js";
import type { StreamClaim } from "../tenant-streams.js";
import { type App, loadSandbox } from "./common.js";

/**
 * The caller's running sandbox (waiting, bounded, while it becomes running) and its host daemon, or the
 * HTTP error that refuses the upgrade.
 */
export async function openRuntime(app: App, u: UpgradeCtx, action: string) {
  // The row as running: a resume may have placed it on another host.
  const row = await app.sandboxes.awaitRunning(await loadSandbox(app, u), action);
  return { row, daemon: app.sandboxes.daemonFor(row) };
}

/**
 * The PTY opens before the 101 so a failure is still an HTTP error; the client resizes it first thing.
 * Undefined when the client left while the guest opened it (the PTY is closed again, nothing is held).
 */
export async function openShell(
  app: App,
  u: UpgradeCtx,
): Promise<{ row: SandboxRow; pty: PtySession; claim: StreamClaim } | undefined> {
  const { row, daemon } = await openRuntime(app, u, "open a shell in");
  const claim = app.tenantStreams.open(row.user_id);
  const pty = await daemon.openPty(row.id, { rows: 24, cols: 80 }).catch((e) => {
    claim.release();
    throw mapHostdError(e, { action: "open a shell in" });
  });
  if (u.signal.aborted) {
    pty.stream.destroy();
    claim.release();
    return undefined;
  }
  return { row, pty, claim };
}

/**
 * Counts the shell as an open stream and ends it once, whichever side goes first: `end(true)` when the
 * shell's output ended (it exited), `end(false)` on a failure or when the client left. After the exit,
 * output still in flight gets `graceMs` to arrive before the end.
 */
export function linkShell(
  app: App,
  row: SandboxRow,
  pty: PtySession,
  claim: StreamClaim,
  end: (exited: boolean) => void,
  graceMs: number,
): (exited: boolean) => void {
  app.sandboxes.streamOpened(row.id);
  let closed = false;
  const close = (exited: boolean) => {
    if (closed) return;
    closed = true;
    claim.release();
    app.sandboxes.streamClosed(row.id);
    pty.stream.destroy();
    end(exited);
  };
  pty.stream.on("end", () => close(true));
  pty.stream.on("error", () => close(false));
  void pty.exited.then(
    () => (graceMs > 0 ? setTimeout(() => close(true), graceMs).unref() : close(true)),
    () => close(false),
  );
  return close;
}

/** Keystrokes into the PTY; `pause` stops the client's side until the guest has taken them. */
export function typeInto(pty: PtySession, data: Buffer, pause: () => void, resume: () => void): void {
  if (!pty.stream.write(data)) {
    pause();
    pty.stream.once("drain", resume);
  }
}
