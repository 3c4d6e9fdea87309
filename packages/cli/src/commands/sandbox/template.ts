import * as fs from "node:fs";
import { bool, str } from "../../framework/args.js";
import type { Command, Context, Group } from "../../framework/command.js";
import { UsageError } from "../../framework/errors.js";
import type { TemplateView } from "../../lib/sdk.js";
import { formatBytes, relativeTime, renderKeyValues, renderTable } from "../../ui/table.js";
import { confirmOrYes, yesFlag } from "./common.js";

/**
 * Prints build log lines until the final frame, a spinner naming the running step in between (on a
 * terminal); exit 1 on a failed build. `view`: in JSON mode print the template's final view alone.
 */
async function follow(ctx: Context, ref: string, view = false): Promise<number> {
  const api = await ctx.api();
  let spin = ctx.out.spinner(`Waiting for the build of ${ref}`);
  let step: string | undefined;
  let status: string | undefined;
  // In JSON mode the log goes to stderr so stdout keeps its single document.
  const sink = ctx.out.json ? ctx.streams.stderr : ctx.streams.stdout;
  for await (const ev of api.client.templates.followLogs(ref, { timeoutMs: 0 })) {
    spin.stop();
    if (ev.final) {
      status = ev.status;
      break;
    }
    if (ev.line !== undefined) {
      sink.write(ev.line.endsWith("\n") ? ev.line : `${ev.line}\n`);
      step = /^Step (\d+\/\d+) :/.exec(ev.line)?.[1] ?? step;
    }
    spin = ctx.out.spinner(step ? `Step ${step} running` : `Waiting for the build of ${ref}`);
  }
  spin.stop();
  const tpl = await api.client.templates.get(ref).catch(() => undefined);
  status ??= tpl?.status;
  if (ctx.out.json && view && tpl) ctx.out.printJson(tpl);
  else if (ctx.out.json) ctx.out.printJson({ action: "template_build_finished", status, template: tpl });
  else
    ctx.out.info(
      status === "ready"
        ? ctx.out.success(`Template ${ref} is ready`)
        : `Template ${ref} build ${status ?? "ended"}`,
    );
  return status === "failed" || status === "cancelled" ? 1 : 0;
}

const submit: Command = {
  kind: "command",
  name: "submit",
  summary: "Build a custom image from a Dockerfile",
  usage: "<name> -f <Dockerfile> [--base <image>] [--detach]",
  flags: [
    {
      name: "file",
      short: "f",
      type: "string",
      value: "<path>",
      description: "Dockerfile (default ./Dockerfile; - = stdin)",
    },
    {
      name: "base",
      type: "string",
      value: "<image>",
      description: "Base image (must match the Dockerfile's FROM: nodeops/sandbox:debian)",
    },
    {
      name: "follow",
      short: "F",
      type: "boolean",
      description: "Stream the build log until it finishes (the default)",
    },
    { name: "detach", short: "d", type: "boolean", description: "Return once submitted, without the log" },
  ],
  args: { min: 1, max: 1 },
  examples: [
    "createos sandbox template submit my-rails -f Dockerfile",
    "createos sandbox template submit my-rails -f Dockerfile --detach",
  ],
  async run(ctx, { flags, positionals }) {
    const file = str(flags, "file") ?? "Dockerfile";
    let dockerfile: string;
    try {
      dockerfile = fs.readFileSync(file === "-" ? 0 : file, "utf8");
    } catch (err) {
      throw new UsageError(
        `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
        ctx.commandPath,
      );
    }
    const api = await ctx.api();
    const base = str(flags, "base");
    const tpl = await api.client.templates.create({
      name: positionals[0] as string,
      dockerfile,
      ...(base ? { base } : {}),
    });
    if (!bool(flags, "detach")) {
      if (!ctx.out.json) ctx.out.info(`Submitted ${tpl.name} (${tpl.id})`);
      return follow(ctx, tpl.id, true);
    }
    ctx.out.result(
      { action: "template_submitted", ...tpl },
      () =>
        `${ctx.out.success(`Submitted ${tpl.name} (${tpl.id}), status ${tpl.status}`)}\nFollow the build: createos sandbox template logs ${tpl.name} --follow`,
    );
    return 0;
  },
};

const ls: Command = {
  kind: "command",
  name: "ls",
  aliases: ["list"],
  summary: "List your templates",
  usage: "",
  args: { max: 0 },
  examples: ["createos sandbox template ls"],
  async run(ctx) {
    const api = await ctx.api();
    const list = await api.client.templates.list();
    ctx.out.result(list, () =>
      list.length === 0
        ? "No templates."
        : renderTable<TemplateView>(
            [
              { header: "id", get: (t) => t.id },
              { header: "name", get: (t) => t.name },
              { header: "status", get: (t) => t.status },
              { header: "base", get: (t) => t.base },
              {
                header: "size",
                get: (t) => (t.ext4_size_bytes ? formatBytes(t.ext4_size_bytes) : ""),
                right: true,
              },
              { header: "created", get: (t) => relativeTime(t.created_at) },
            ],
            list,
          ),
    );
    return 0;
  },
};

const show: Command = {
  kind: "command",
  name: "show",
  aliases: ["get"],
  summary: "Show a template (and its Dockerfile)",
  usage: "<name|id>",
  args: { min: 1, max: 1 },
  examples: ["createos sandbox template show my-rails"],
  async run(ctx, { positionals }) {
    const api = await ctx.api();
    const t = await api.client.templates.get(positionals[0] as string, { include: "dockerfile" });
    ctx.out.result(
      t,
      () =>
        renderKeyValues([
          ["ID", t.id],
          ["Name", t.name],
          ["Status", t.status],
          ["Base", t.base],
          ["Size", t.ext4_size_bytes ? formatBytes(t.ext4_size_bytes) : undefined],
          ["Created", t.created_at],
          ["Built", t.built_at],
        ]) + (t.dockerfile ? `\n${t.dockerfile}` : ""),
    );
    return 0;
  },
};

const logs: Command = {
  kind: "command",
  name: "logs",
  summary: "Show a template's build log",
  usage: "<name|id> [--follow]",
  flags: [
    {
      name: "follow",
      short: "f",
      type: "boolean",
      description: "Follow until the build finishes (exit 1 if it fails)",
    },
  ],
  args: { min: 1, max: 1 },
  examples: ["createos sandbox template logs my-rails", "createos sandbox template logs my-rails --follow"],
  async run(ctx, { flags, positionals }) {
    const ref = positionals[0] as string;
    if (bool(flags, "follow")) return follow(ctx, ref);
    const api = await ctx.api();
    const text = await api.client.templates.logs(ref);
    if (ctx.out.json) ctx.out.printJson({ id: ref, logs: text });
    else ctx.streams.stdout.write(text);
    return 0;
  },
};

const rm: Command = {
  kind: "command",
  name: "rm",
  aliases: ["delete"],
  summary: "Delete a template",
  usage: "<name|id> [--yes]",
  flags: [yesFlag],
  args: { min: 1, max: 1 },
  examples: ["createos sandbox template rm my-rails --yes"],
  async run(ctx, { flags, positionals }) {
    const ref = positionals[0] as string;
    if (!(await confirmOrYes(ctx, bool(flags, "yes"), `Delete template ${ref}?`))) return 1;
    const api = await ctx.api();
    await api.client.templates.delete(ref);
    ctx.out.result({ action: "template_deleted", id: ref }, () => ctx.out.success(`Deleted template ${ref}`));
    return 0;
  },
};

export const templateGroup: Group = {
  kind: "group",
  name: "template",
  aliases: ["templates", "tpl"],
  summary: "Custom images built from a Dockerfile (use as --rootfs)",
  children: [submit, ls, show, logs, rm],
  examples: [
    "createos sandbox template submit my-rails -f Dockerfile",
    "createos sandbox template ls",
    "createos sandbox template show my-rails",
    "createos sandbox template logs my-rails",
    "createos sandbox template rm my-rails",
  ],
};
