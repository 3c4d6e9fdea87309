import { bool } from "../../framework/args.js";
import type { Command } from "../../framework/command.js";
import { boxArg, label, waitForStatus } from "./common.js";

const noWait = {
  name: "no-wait",
  type: "boolean" as const,
  description: "Return once the server accepted the request",
};

export const pauseCommand: Command = {
  kind: "command",
  name: "pause",
  summary: "Snapshot a running sandbox to storage and stop its VM",
  usage: "<name|id> [--no-wait]",
  description: "Paused sandboxes keep their name, ID, disks, networks and environment variables.",
  flags: [noWait],
  args: { max: 1 },
  completes: "sandbox",
  examples: ["createos sandbox pause my-box"],
  async run(ctx, { flags, positionals }) {
    const sb = await boxArg(ctx, positionals[0], ["running"], "pause");
    const name = label(sb.data);
    await ctx.out.step(
      `Pausing ${name}`,
      async () => {
        await sb.pause();
        if (!bool(flags, "no-wait")) await waitForStatus(sb, "paused");
      },
      () => `Paused ${name}`,
    );
    ctx.out.result({ action: "paused", id: sb.id, name: sb.data.name, status: sb.data.status }, () =>
      ctx.out.stderrTTY ? undefined : `Paused ${name}`,
    );
    return 0;
  },
};

export const resumeCommand: Command = {
  kind: "command",
  name: "resume",
  summary: "Restore a paused sandbox",
  usage: "<name|id> [--no-wait]",
  flags: [noWait],
  args: { max: 1 },
  completes: "sandbox",
  examples: ["createos sandbox resume my-box"],
  async run(ctx, { flags, positionals }) {
    const sb = await boxArg(ctx, positionals[0], ["paused", "error"], "resume");
    const name = label(sb.data);
    await ctx.out.step(
      `Resuming ${name}`,
      async () => {
        await sb.resume();
        if (!bool(flags, "no-wait")) await waitForStatus(sb, "running");
      },
      () => `Resumed ${name}`,
    );
    ctx.out.result(
      { action: "resumed", id: sb.id, name: sb.data.name, status: sb.data.status, ip: sb.data.ip },
      () => (ctx.out.stderrTTY ? undefined : `Resumed ${name}`),
    );
    return 0;
  },
};

export const forkCommand: Command = {
  kind: "command",
  name: "fork",
  summary: "Clone a paused sandbox into a new one",
  usage: "<name|id> [--paused]",
  description: "The clone gets a new ID, IP and name; it starts running unless --paused is given.",
  flags: [{ name: "paused", type: "boolean", description: "Leave the new sandbox paused" }, noWait],
  args: { max: 1 },
  completes: "sandbox",
  examples: ["createos sandbox fork my-box", "createos sandbox fork my-box --paused"],
  async run(ctx, { flags, positionals }) {
    const src = await boxArg(ctx, positionals[0], ["paused"], "fork");
    const paused = bool(flags, "paused");
    const child = await ctx.out.step(
      `Forking ${label(src.data)}`,
      async () => {
        const c = await src.fork(paused ? { start_paused: true } : {});
        if (!bool(flags, "no-wait")) await waitForStatus(c, paused ? "paused" : "running");
        return c;
      },
      (c) => `Forked ${label(src.data)} into ${label(c.data)}`,
    );
    const v = child.data;
    ctx.out.result(
      { action: "forked", id: v.id, name: v.name, source_id: src.id, status: v.status, ip: v.ip },
      () => `${label(v)} ${v.status}${ctx.out.stderrTTY ? "" : ` (forked from ${label(src.data)})`}`,
    );
    return 0;
  },
};
