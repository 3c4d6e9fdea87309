/**
 * A gateway session channel: `ssh <id>@gateway` gets a PTY shell, `ssh <id>@gateway cmd` runs `cmd`
 * through the agent (a PTY when the client asked for one, else a plain exec with stdout, stderr, stdin and
 * the exit code kept apart), so it works in images without sshd. The PTY half is the API shell's
 * (routes/pty.ts): the same stream accounting and tenant caps.
 */
import type { HostDaemon, PtySession } from "@createos-sandbox/protocol";
import { ApiError, apiError } from "@createos-sandbox/protocol";
import type { PseudoTtyInfo, ServerChannel, Session } from "ssh2";
import { mapHostdError } from "../hosterr.js";
import type { App } from "../routes/common.js";
import { linkShell, typeInto } from "../routes/pty.js";
import type { SandboxRow } from "../store/types.js";

/** The running sandbox, or the catalog's words for why not (a paused one is not woken: resume it first). */
export async function runningSandbox(app: App, id: string, action: string): Promise<SandboxRow> {
  const row = await app.store.getSandbox(id);
  if (!row) throw apiError("sandbox_not_found", { id });
  return app.sandboxes.awaitRunning(row, action);
}

/** Wording for a refusal the client reads on stderr. */
export function refusalText(e: unknown): string {
  const m = mapHostdError(e);
  return m instanceof ApiError ? m.message : "internal error";
}

export function serveSession(app: App, sandboxId: string, session: Session, who: string): void {
  let tty: PseudoTtyInfo | undefined;
  let pty: PtySession | undefined;
  session.on("pty", (accept, _reject, info) => {
    tty = info;
    accept?.();
  });
  session.on("window-change", (accept, _reject, info) => {
    if (info.rows > 0 && info.cols > 0) pty?.resize(info.rows, info.cols);
    accept?.();
  });
  session.on("signal", (accept, _reject, info) => {
    pty?.signal(info.name);
    accept?.();
  });
  session.on("env", (_accept, reject) => reject?.());
  const start = (accept: () => ServerChannel, command: string | undefined) => {
    const channel = accept();
    const run = async () => {
      const row = await runningSandbox(app, sandboxId, command === undefined ? "open a shell in" : "exec in");
      const daemon = app.sandboxes.daemonFor(row);
      app.log.info("ssh session", {
        sandbox_id: row.id,
        who,
        pty: tty !== undefined,
        exec: command !== undefined,
      });
      if (tty || command === undefined) pty = await shell(app, daemon, row, channel, tty, command);
      else await exec(app, daemon, row, channel, command);
    };
    run().catch((e) => {
      app.log.info("ssh session refused", { sandbox_id: sandboxId, who, reason: refusalText(e) });
      channel.stderr.write(`${refusalText(e)}\r\n`);
      channel.exit(1);
      channel.end();
    });
  };
  session.on("shell", (accept) => start(accept, undefined));
  session.on("exec", (accept, _reject, info) => start(accept, info.command));
  session.on("subsystem", (_accept, reject) => reject?.());
}

async function shell(
  app: App,
  daemon: HostDaemon,
  row: SandboxRow,
  channel: ServerChannel,
  tty: PseudoTtyInfo | undefined,
  command: string | undefined,
): Promise<PtySession> {
  const claim = app.tenantStreams.open(row.user_id);
  const pty = await daemon
    .openPty(row.id, {
      ...(command !== undefined ? { argv: ["/bin/sh", "-c", command] } : {}),
      ...(tty?.term ? { env: { TERM: tty.term } } : {}),
      rows: tty?.rows || 24,
      cols: tty?.cols || 80,
    })
    .catch((e) => {
      claim.release();
      throw mapHostdError(e, { action: "open a shell in" });
    });
  // The output may end before the exit status arrives: the status is waited for (briefly) to report it.
  const status = Promise.race([
    pty.exited.then(
      (r) => r.exit_code,
      () => 255,
    ),
    new Promise<number>((r) => setTimeout(() => r(255), 1000).unref()),
  ]);
  // After the shell exits its last output gets a moment to arrive before the channel closes.
  const close = linkShell(
    app,
    row,
    pty,
    claim,
    () => {
      void status.then((code) => {
        channel.exit(code);
        channel.end();
      });
    },
    200,
  );
  pty.stream.on("data", (d: Buffer) => {
    if (!channel.write(d)) {
      pty.stream.pause();
      channel.once("drain", () => pty.stream.resume());
    }
  });
  channel.on("data", (d: Buffer) => {
    typeInto(
      pty,
      d,
      () => channel.pause(),
      () => channel.resume(),
    );
    void app.sandboxes.touch(row.id);
  });
  channel.on("close", () => close(false));
  return pty;
}

async function exec(
  app: App,
  daemon: HostDaemon,
  row: SandboxRow,
  channel: ServerChannel,
  command: string,
): Promise<void> {
  const claim = app.tenantStreams.open(row.user_id);
  const ac = new AbortController();
  channel.on("close", () => ac.abort());
  // A full channel: the chunk is not taken until the client reads (the guest gets no credit meanwhile).
  const send = (w: NodeJS.WritableStream) => (c: Buffer) =>
    w.write(c) ? undefined : new Promise<void>((r) => w.once("drain", () => r()));
  app.sandboxes.streamOpened(row.id);
  try {
    const r = await daemon.exec(
      row.id,
      { argv: ["/bin/sh", "-c", command], stdin: channel },
      { onStdout: send(channel), onStderr: send(channel.stderr) },
      ac.signal,
    );
    if (r.error) channel.stderr.write(`${r.error}\n`);
    channel.exit(r.exit_code < 0 ? 255 : r.exit_code);
    channel.end();
  } catch (e) {
    if (!ac.signal.aborted) throw mapHostdError(e, { action: "exec in" });
  } finally {
    claim.release();
    app.sandboxes.streamClosed(row.id);
  }
}
