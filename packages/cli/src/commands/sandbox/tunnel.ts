import { str } from "../../framework/args.js";
import type { Command } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { untilInterrupted } from "../../lib/signals.js";
import { boxArg, label, requireRunning } from "./common.js";

function port(value: string | undefined, flag: string, cp: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 65535)
    throw new UsageError(`--${flag} must be a port number (1-65535), got "${value}"`, cp);
  return n;
}

export const tunnelCommand: Command = {
  kind: "command",
  name: "tunnel",
  aliases: ["port-forward", "forward"],
  summary: "Forward a local port to a port inside a sandbox (no SSH key needed)",
  usage: "<name|id> --remote <port> [--local <port>] [--bind <addr>]",
  description:
    "Listens on --bind (default 127.0.0.1) port --local (default: the remote port) and carries each\n" +
    "connection to the sandbox's 127.0.0.1:<remote>. Runs until Ctrl-C. In JSON mode prints\n" +
    '{"action":"tunnel_started",…} before blocking.',
  flags: [
    { name: "remote", short: "r", type: "string", value: "<port>", description: "Port inside the sandbox" },
    {
      name: "local",
      short: "l",
      type: "string",
      value: "<port>",
      description: "Local port (default: same as --remote; 0 = any)",
    },
    {
      name: "bind",
      short: "b",
      type: "string",
      value: "<addr>",
      description: "Local address to listen on (default 127.0.0.1)",
    },
  ],
  args: { max: 1 },
  completes: "sandbox",
  examples: [
    "createos sandbox tunnel my-box --local 8080 --remote 8000",
    "createos sandbox tunnel my-box --remote 5432",
    "createos sandbox tunnel my-box --remote 80 --bind 0.0.0.0",
  ],
  async run(ctx, { flags, positionals }) {
    const cp = ctx.commandPath;
    const remote = port(str(flags, "remote"), "remote", cp);
    if (remote === undefined) throw new UsageError("--remote <port> is required", cp);
    const localRaw = str(flags, "local");
    const local = localRaw === "0" ? 0 : (port(localRaw, "local", cp) ?? remote);
    const bind = str(flags, "bind") ?? "127.0.0.1";
    const sb = await boxArg(ctx, positionals[0], ["running"], "tunnel into");
    requireRunning(sb);
    const stop = untilInterrupted();
    let t: { port: number; close(): unknown };
    try {
      t = await sb.tunnel(remote, {
        localPort: local,
        bind,
        // One failed connection (nothing listening in the sandbox, say) must not end the tunnel.
        onError: (err) => ctx.out.warn(`connection to ${label(sb.data)}:${remote} failed: ${err.message}`),
      });
    } catch (err) {
      stop.dispose();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EADDRINUSE")
        throw new CliError(`local port ${local} on ${bind} is already in use (pick another with --local)`);
      if (code === "EACCES") throw new CliError(`not allowed to listen on ${bind}:${local}`);
      throw err;
    }
    const listen = `${bind.includes(":") ? `[${bind}]` : bind}:${t.port}`;
    ctx.out.result(
      { action: "tunnel_started", id: sb.id, listen_addr: listen, remote_port: remote },
      () => `Forwarding ${ctx.out.style.bold(listen)} → ${label(sb.data)}:${remote}  (Ctrl-C to stop)`,
    );
    await stop.done;
    stop.dispose();
    await t.close();
    if (!ctx.out.json) ctx.out.info("Tunnel closed.");
    return 0;
  },
};
