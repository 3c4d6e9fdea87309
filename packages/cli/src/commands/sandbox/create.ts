import * as fs from "node:fs";
import * as path from "node:path";
import { bool, int, list, str } from "../../framework/args.js";
import type { Command, Context } from "../../framework/command.js";
import { UsageError } from "../../framework/errors.js";
import { homeDir } from "../../lib/config.js";
import { parseAutoPause } from "../../lib/duration.js";
import type { CreateSandboxRequest, Shape } from "../../lib/sdk.js";
import { formatMib, renderKeyValues } from "../../ui/table.js";
import { ingressUrl, parseEnvPairs, readPublicKey } from "./common.js";

export function parseDiskSpec(
  spec: string,
  commandPath: string,
): { disk_id: string; mount_path: string; sub_path?: string } {
  // name:/mount/path[:sub/path]
  const first = spec.indexOf(":");
  if (first <= 0) throw new UsageError(`--disk wants name:/mount/path, got "${spec}"`, commandPath);
  const name = spec.slice(0, first);
  let mount = spec.slice(first + 1);
  let sub: string | undefined;
  const second = mount.indexOf(":");
  if (second !== -1) {
    sub = mount.slice(second + 1);
    mount = mount.slice(0, second);
  }
  if (!mount.startsWith("/"))
    throw new UsageError(`--disk mount path must be absolute, got "${mount}"`, commandPath);
  return { disk_id: name, mount_path: mount, ...(sub ? { sub_path: sub } : {}) };
}

export function shapeHint(s: Shape): string {
  const cpu = s.cpu_quota_pct ? `${s.cpu_quota_pct / 100} vCPU` : `${s.vcpu} vCPU`;
  return `${cpu}, ${formatMib(s.mem_mib)} RAM, ${formatMib(s.default_disk_mib)} disk`;
}

function publicKeysOnDisk(env: NodeJS.ProcessEnv): string[] {
  const dir = path.join(homeDir(env), ".ssh");
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => f.endsWith(".pub"))
      .map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

async function wizard(ctx: Context, req: CreateSandboxRequest): Promise<void> {
  const api = await ctx.api();
  const { prompt } = ctx;
  const shapes = await api.client.listShapes();
  req.shape = await prompt.select(
    "Shape",
    shapes.map((s) => ({ label: s.id, value: s.id, hint: shapeHint(s) })),
  );
  const name = await prompt.text("Name", {
    default: req.name ?? "",
    validate: (v) =>
      v === "" || /^[a-z0-9][a-z0-9-]{0,62}$/.test(v) ? undefined : "lower-case letters, digits and -",
  });
  if (name !== "") req.name = name;
  else req.name = undefined;
  const catalog = await api.client.listRootfs();
  const names = catalog.entries?.length ? catalog.entries.map((e) => e.name) : catalog.rootfs;
  if (names.length > 0) {
    const initial = Math.max(0, names.indexOf(req.rootfs ?? catalog.default));
    req.rootfs = await prompt.select(
      "Base image",
      names.map((n) => {
        const entry = catalog.entries?.find((e) => e.name === n);
        return {
          label: n,
          value: n,
          hint: [n === catalog.default ? "default" : "", entry?.description ?? ""]
            .filter(Boolean)
            .join(" · "),
        };
      }),
      initial,
    );
  }
  let networks: { id: string; name: string }[] = [];
  try {
    networks = await api.client.networks.list();
  } catch {
    networks = []; // networks may not be offered by this server; the wizard just skips the step
  }
  if (networks.length > 0) {
    const picked = await prompt.multiSelect(
      "Private networks",
      networks.map((n) => ({ label: n.name, value: n.id, hint: n.id })),
    );
    if (picked.length) req.networks = picked.map((id) => ({ id }));
  }
  const keys = publicKeysOnDisk(ctx.env);
  if (keys.length > 0) {
    const picked = await prompt.multiSelect(
      "SSH public keys to authorise",
      keys.map((k) => ({ label: k, value: k })),
    );
    if (picked.length) req.ssh_pubkeys = picked.map((k) => readPublicKey(k, ctx.env, ctx.commandPath));
  }
  req.ingress_enabled = await prompt.confirm("Public HTTPS URL (ingress)?", req.ingress_enabled ?? false);
  const ap = await prompt.text("Auto-pause after inactivity (e.g. 10m, 1h, off)", {
    default: "off",
    validate: (v) => {
      const r = parseAutoPause(v);
      return typeof r === "string" ? r : undefined;
    },
  });
  const parsed = parseAutoPause(ap);
  if (typeof parsed !== "string" && parsed.kind === "seconds") req.auto_pause_after_seconds = parsed.seconds;
}

export const createCommand: Command = {
  kind: "command",
  name: "create",
  aliases: ["new"],
  summary: "Create a sandbox",
  usage: "--shape <id> [flags]",
  description:
    "Creates a sandbox and waits until it is running. On a terminal without --shape an interactive\n" +
    "wizard asks for the shape, name, image, networks, SSH keys, ingress and auto-pause.",
  flags: [
    { name: "shape", type: "string", value: "<id>", description: "Size (see `createos sandbox shapes`)" },
    {
      name: "name",
      type: "string",
      value: "<name>",
      description: "Friendly name (auto-generated if omitted)",
    },
    {
      name: "rootfs",
      type: "string",
      value: "<image>",
      description: "Base OS image (see `createos sandbox rootfs`)",
    },
    { name: "disk-mib", type: "string", value: "<n>", description: "Disk size in MiB" },
    { name: "ssh-key", type: "string", multiple: true, value: "<path>", description: "SSH public key file" },
    {
      name: "env",
      type: "string",
      multiple: true,
      value: "KEY=VALUE",
      description: "Environment variable for exec",
    },
    { name: "ingress", type: "boolean", description: "Enable a public HTTPS URL for HTTP services" },
    {
      name: "network",
      type: "string",
      multiple: true,
      value: "<name|id>",
      description: "Join a private network",
    },
    {
      name: "disk",
      type: "string",
      multiple: true,
      value: "<name>:/mount/path",
      description: "Mount an S3 disk",
    },
    {
      name: "egress",
      type: "string",
      multiple: true,
      value: "<host>",
      description: "Outbound allowlist rule",
    },
    {
      name: "auto-pause",
      type: "string",
      value: "<duration>",
      description: "Auto-pause after inactivity (e.g. 10m, 1h)",
    },
  ],
  args: { max: 0 },
  examples: [
    "createos sandbox create --shape s-1vcpu-256mb",
    "createos sandbox create --shape s-1vcpu-1gb --name demo --ssh-key ~/.ssh/id_ed25519.pub --ingress",
    "createos sandbox create --shape s-1vcpu-1gb --disk my-bucket:/mnt/data --network my-net",
    "createos sandbox create --shape s-1vcpu-256mb --env API_URL=https://example.com --auto-pause 10m",
    "createos sandbox create            # interactive wizard on a terminal",
  ],
  async run(ctx, { flags }) {
    const cp = ctx.commandPath;
    const req: CreateSandboxRequest = { shape: str(flags, "shape") ?? "" };
    const name = str(flags, "name");
    if (name !== undefined) req.name = name;
    const rootfs = str(flags, "rootfs");
    if (rootfs !== undefined) req.rootfs = rootfs;
    const diskMib = int(flags, "disk-mib", cp, 1);
    if (diskMib !== undefined) req.disk_mib = diskMib;
    const keys = list(flags, "ssh-key").map((k) => readPublicKey(k, ctx.env, cp));
    if (keys.length) req.ssh_pubkeys = keys;
    const envs = parseEnvPairs(list(flags, "env"), cp);
    if (envs) req.envs = envs;
    if (bool(flags, "ingress")) req.ingress_enabled = true;
    const nets = list(flags, "network");
    if (nets.length) req.networks = nets.map((id) => ({ id }));
    const disks = list(flags, "disk").map((d) => parseDiskSpec(d, cp));
    if (disks.length) req.disks = disks;
    const egress = list(flags, "egress");
    if (egress.length) req.egress = egress;
    const ap = str(flags, "auto-pause");
    if (ap !== undefined) {
      const parsed = parseAutoPause(ap);
      if (typeof parsed === "string") throw new UsageError(parsed, cp);
      if (parsed.kind === "seconds") req.auto_pause_after_seconds = parsed.seconds;
    }

    if (req.shape === "") {
      if (!ctx.interactive) throw new UsageError("--shape is required (see `createos sandbox shapes`)", cp);
      await wizard(ctx, req);
    }
    const api = await ctx.api();
    const started = Date.now();
    const sb = await ctx.out.step(
      `Creating sandbox${req.name ? ` ${req.name}` : ""} (${req.shape})`,
      // Create is synchronous on the server (it answers once the VM runs), so no client timeout.
      () => api.client.createSandbox(req, { timeoutMs: 0 }),
      (s) => `Created ${s.data.name ?? s.id} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
    );
    const v = sb.data;
    const ref = v.name ?? v.id;
    const doc = {
      action: "created",
      id: v.id,
      name: v.name,
      shape: v.shape ?? req.shape,
      rootfs: v.rootfs,
      ip: v.ip,
      status: v.status,
      ingress_url: ingressUrl(v),
      shell_command: `createos sandbox shell ${ref}`,
    };
    ctx.out.result(doc, () => {
      const s = ctx.out.style;
      return (
        renderKeyValues([
          ["ID", v.id],
          ["Name", v.name],
          ["Status", v.status],
          [
            "Shape",
            `${doc.shape} (${v.vcpu} vCPU, ${formatMib(v.mem_mib)} RAM, ${formatMib(v.disk_mib)} disk)`,
          ],
          ["Image", v.rootfs],
          ["IP", v.ip],
          ["Public URL", doc.ingress_url],
        ]) + `\nOpen a shell: ${s.bold(doc.shell_command)}`
      );
    });
    return 0;
  },
};
