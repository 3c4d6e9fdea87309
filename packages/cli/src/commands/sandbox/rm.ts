import { bool } from "../../framework/args.js";
import type { Command } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { describeError } from "../../lib/api.js";
import { label } from "./common.js";

interface Result {
  ref: string;
  id?: string;
  deleted: boolean;
  status?: string;
  error?: string;
}

export const rmCommand: Command = {
  kind: "command",
  name: "rm",
  aliases: ["delete", "destroy"],
  summary: "Delete one or more sandboxes",
  usage: "<name|id>... [--force]",
  description:
    "Asks for confirmation on a terminal; scripts must pass --force (or -y/--yes).\nExits 1 if any sandbox could not be deleted.",
  flags: [
    {
      name: "force",
      short: "y",
      aliases: ["yes"],
      type: "boolean",
      description: "Skip the confirmation prompt",
    },
  ],
  completes: "sandbox",
  examples: ["createos sandbox rm my-box", "createos sandbox rm sb-01k... sb-01k... --force"],
  async run(ctx, { flags, positionals }) {
    const force = bool(flags, "force");
    if (!force && !ctx.interactive) {
      throw new UsageError(
        "refusing to delete without confirmation: pass --force (or --yes) when not on a terminal",
        ctx.commandPath,
      );
    }
    if (positionals.length === 0 && !ctx.interactive)
      throw new UsageError("missing sandbox name or id", ctx.commandPath);
    const api = await ctx.api();
    let refs = positionals;
    if (refs.length === 0) {
      const all = (await api.sandboxes(200)).filter((s) =>
        ["running", "paused", "error"].includes(s.data.status),
      );
      if (all.length === 0) throw new CliError("no running or paused sandboxes to delete", "not_found");
      refs = await ctx.prompt.multiSelect(
        "Sandboxes to delete",
        all.map((s) => ({ label: s.data.name ?? s.id, value: s.id, hint: `${s.id}  ${s.data.status}` })),
      );
      if (refs.length === 0) return 0;
    }
    if (!force) {
      const ok = await ctx.prompt.confirm(
        `Delete ${refs.length === 1 ? refs[0] : `${refs.length} sandboxes (${refs.join(", ")})`}?`,
      );
      if (!ok) {
        ctx.out.info("Aborted; nothing deleted.");
        return 1;
      }
    }
    const results: Result[] = [];
    for (const ref of refs) {
      try {
        const sb = await api.sandbox(ref);
        const res = await ctx.out.step(`Deleting ${label(sb.data)}`, () => sb.destroy());
        results.push({ ref, id: sb.id, deleted: true, status: res.status });
        if (!ctx.out.json) ctx.streams.stdout.write(ctx.out.success(`Deleted ${label(sb.data)}`) + "\n");
      } catch (err) {
        const d = describeError(err);
        results.push({ ref, deleted: false, error: d.message });
        ctx.streams.stderr.write(`${ctx.out.errStyle.red("error:")} ${ref}: ${d.message}\n`);
      }
    }
    const failed = results.filter((r) => !r.deleted).length;
    if (ctx.out.json) {
      ctx.out.printJson({ action: "deleted", results, deleted: results.length - failed, failed });
    }
    return failed > 0 ? 1 : 0;
  },
};
