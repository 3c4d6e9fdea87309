import { bool, str } from "../../framework/args.js";
import type { Command, Group } from "../../framework/command.js";
import { UsageError } from "../../framework/errors.js";
import type { DiskView } from "../../lib/sdk.js";
import { relativeTime, renderTable } from "../../ui/table.js";
import { confirmOrYes, label, yesFlag } from "./common.js";
import { parseDiskSpec } from "./create.js";

const create: Command = {
  kind: "command",
  name: "create",
  summary: "Register an S3-compatible bucket as a disk",
  usage:
    "<name> --bucket <bucket> --endpoint <url> --access-key <key> --secret-key <secret> [--region <r>] [--path-style]",
  flags: [
    { name: "bucket", type: "string", value: "<bucket>", description: "Bucket name" },
    { name: "endpoint", type: "string", value: "<url>", description: "S3 endpoint URL" },
    { name: "access-key", type: "string", value: "<key>", description: "Access key id" },
    { name: "secret-key", type: "string", value: "<secret>", description: "Secret access key" },
    { name: "region", type: "string", value: "<region>", description: "Bucket region" },
    {
      name: "path-style",
      type: "boolean",
      description: "Path-style addressing (MinIO, R2 with custom domains)",
    },
  ],
  args: { min: 1, max: 1 },
  examples: [
    "createos sandbox disk create my-disk --bucket my-bucket --endpoint https://s3.amazonaws.com --access-key AKIA... --secret-key ...",
  ],
  async run(ctx, { flags, positionals }) {
    const need = (n: string) => {
      const v = str(flags, n) ?? (n === "secret-key" ? ctx.env.CREATEOS_DISK_SECRET_KEY : undefined);
      if (!v) throw new UsageError(`--${n} is required`, ctx.commandPath);
      return v;
    };
    const region = str(flags, "region");
    const req = {
      name: positionals[0] as string,
      kind: "s3" as const,
      config: {
        bucket: need("bucket"),
        endpoint: need("endpoint"),
        ...(region ? { region } : {}),
        ...(bool(flags, "path-style") ? { use_path_style: true } : {}),
      },
      credentials: { access_key: need("access-key"), secret_key: need("secret-key") },
    };
    const api = await ctx.api();
    const disk = await api.client.disks.create(req);
    ctx.out.result({ action: "disk_created", ...disk }, () =>
      ctx.out.success(`Registered disk ${disk.name} (${disk.id})`),
    );
    return 0;
  },
};

const ls: Command = {
  kind: "command",
  name: "ls",
  aliases: ["list"],
  summary: "List registered disks",
  usage: "",
  args: { max: 0 },
  examples: ["createos sandbox disk ls"],
  async run(ctx) {
    const api = await ctx.api();
    const disks = await api.client.disks.list();
    ctx.out.result(disks, () =>
      disks.length === 0
        ? "No disks registered."
        : renderTable<DiskView>(
            [
              { header: "id", get: (d) => d.id },
              { header: "name", get: (d) => d.name },
              { header: "bucket", get: (d) => d.config.bucket },
              { header: "endpoint", get: (d) => d.config.endpoint },
              { header: "created", get: (d) => relativeTime(d.created_at) },
            ],
            disks,
          ),
    );
    return 0;
  },
};

const attach: Command = {
  kind: "command",
  name: "attach",
  summary: "Mount a disk into a running sandbox",
  usage: "<sandbox> <disk>:/mount/path[:sub/path]",
  args: { min: 2, max: 2 },
  completes: "sandbox",
  examples: ["createos sandbox disk attach my-box my-disk:/mnt/data"],
  async run(ctx, { positionals }) {
    const [box, spec] = positionals as [string, string];
    const d = parseDiskSpec(spec, ctx.commandPath);
    const sb = await (await ctx.api()).sandbox(box);
    await sb.attachDisk({
      diskId: d.disk_id,
      mountPath: d.mount_path,
      ...(d.sub_path ? { subPath: d.sub_path } : {}),
    });
    ctx.out.result({ action: "disk_attached", id: sb.id, disk: d.disk_id, mount_path: d.mount_path }, () =>
      ctx.out.success(`Mounted ${d.disk_id} at ${d.mount_path} in ${label(sb.data)}`),
    );
    return 0;
  },
};

const detach: Command = {
  kind: "command",
  name: "detach",
  summary: "Unmount a disk from a sandbox",
  usage: "<sandbox> <disk> [--mount-path <path>] [--yes]",
  flags: [
    {
      name: "mount-path",
      type: "string",
      value: "<path>",
      description: "Which mount, when the disk is mounted twice",
    },
    yesFlag,
  ],
  args: { min: 2, max: 2 },
  completes: "sandbox",
  examples: ["createos sandbox disk detach my-box my-disk"],
  async run(ctx, { flags, positionals }) {
    const [box, diskRef] = positionals as [string, string];
    const sb = await (await ctx.api()).sandbox(box);
    let mount = str(flags, "mount-path");
    const attached = await sb.listDisks();
    const mine = attached.filter((a) => a.name === diskRef || a.disk_id === diskRef);
    if (!mount) {
      if (mine.length === 0)
        throw new UsageError(`disk ${diskRef} is not attached to ${label(sb.data)}`, ctx.commandPath);
      if (mine.length > 1)
        throw new UsageError(
          `disk ${diskRef} is mounted more than once; pick one with --mount-path`,
          ctx.commandPath,
        );
      mount = mine[0]?.mount_path as string;
    }
    if (!(await confirmOrYes(ctx, bool(flags, "yes"), `Unmount ${diskRef} from ${label(sb.data)}?`)))
      return 1;
    const diskId = mine[0]?.disk_id ?? diskRef;
    await sb.detachDisk({ diskId, mountPath: mount });
    ctx.out.result({ action: "disk_detached", id: sb.id, disk: diskId, mount_path: mount }, () =>
      ctx.out.success(`Unmounted ${diskRef} from ${label(sb.data)}`),
    );
    return 0;
  },
};

const rm: Command = {
  kind: "command",
  name: "rm",
  aliases: ["delete"],
  summary: "Forget a registered disk (the bucket is untouched)",
  usage: "<name|id> [--yes]",
  flags: [yesFlag],
  args: { min: 1, max: 1 },
  examples: ["createos sandbox disk rm my-disk --yes"],
  async run(ctx, { flags, positionals }) {
    const ref = positionals[0] as string;
    const api = await ctx.api();
    const disk = await api.client.disks.get(ref);
    if (!(await confirmOrYes(ctx, bool(flags, "yes"), `Delete disk ${disk.name}?`))) return 1;
    await api.client.disks.delete(disk.id);
    ctx.out.result({ action: "disk_deleted", id: disk.id, name: disk.name }, () =>
      ctx.out.success(`Deleted disk ${disk.name}`),
    );
    return 0;
  },
};

export const diskGroup: Group = {
  kind: "group",
  name: "disk",
  aliases: ["disks"],
  summary: "S3 disks: register buckets and mount them into sandboxes",
  children: [create, ls, attach, detach, rm],
  examples: [
    "createos sandbox disk create my-disk --bucket my-bucket --endpoint https://s3.amazonaws.com --access-key AKIA... --secret-key ...",
    "createos sandbox disk ls",
    "createos sandbox disk attach my-box my-disk:/mnt/data",
    "createos sandbox disk detach my-box my-disk",
    "createos sandbox disk rm my-disk",
  ],
};
