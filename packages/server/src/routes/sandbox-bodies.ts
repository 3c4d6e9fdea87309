/** The request bodies of the sandbox routes: their schemas, and what create checks that a schema cannot. */
import { apiError, validationError } from "@createos-sandbox/protocol";
import { type Static, Type } from "@sinclair/typebox";
import { DEFAULT_DISK_MIB, shapeById } from "../catalog.js";
import { egressRulesError } from "../egress.js";
import type { Ctx } from "../http/server.js";
import type { CreateInput, ForkInput } from "../rows.js";
import { bool, envs, int, str, strings } from "../schema.js";
import { MAX_EGRESS_RULES, MAX_SSH_KEYS, NAME_RE, mergeSshKeys } from "../validate.js";
import { type App, mustFindNetwork } from "./common.js";

const egress = () => strings("egress", { max: MAX_EGRESS_RULES, grammar: "egress" });
const sshKeys = (name: string, o: { required?: boolean; emptyMsg?: string } = {}) =>
  strings(name, { max: MAX_SSH_KEYS, grammar: "sshKey", ...o });

function autoPause(app: App) {
  const min = app.cfg.autoPauseMinSeconds;
  const rangeMsg = `auto_pause_after_seconds must be between ${min} and 86400`;
  return int("auto_pause_after_seconds", { min, max: 86400, rangeMsg });
}

/** Relative, and no `..` segment. */
const SUB_PATH = /^(?!\/)(?![\s\S]*(?:^|\/)\.\.(?:\/|$))/;

/** `{disk_id, mount_path, sub_path?}`, its failures reported under `<at>.<field>`. */
export function diskAttachment(at: string) {
  return {
    disk_id: str("disk_id", { required: true, msg: "disk_id is required", at: `${at}.disk_id` }),
    mount_path: str("mount_path", {
      required: true,
      max: 4096,
      re: /^\/[^\0]*$/,
      msg: "mount_path must be an absolute path",
      at: `${at}.mount_path`,
    }),
    sub_path: str("sub_path", {
      re: SUB_PATH,
      msg: "sub_path must be relative and must not contain '..'",
      at: `${at}.sub_path`,
    }),
  };
}

const NETWORK_ID = "each network needs an id (string)";
/** `networks: [{id}]` of a create or a fork body: networks to join, by id or name. */
const networksField = () =>
  Type.Optional(
    Type.Unsafe<{ id: string }[] | null>({
      type: ["array", "null"],
      maxItems: 16,
      items: Type.Object(
        { id: str("id", { required: true, max: 100, msg: NETWORK_ID, at: "networks" }) },
        { "x-msg": NETWORK_ID, "x-at": "networks" },
      ),
      "x-msg": "networks must be an array of {id} (at most 16)",
    }),
  );

const always = (at: string, msg: string) => ({ not: {}, "x-at": at, "x-msg": msg });
/** An array where a disk should be is read as a disk with neither field, as the API always has. */
const ARRAY_AS_DISK = {
  if: { type: "array" },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then, never awaited
  then: {
    allOf: [
      always("disks.disk_id", "disk_id is required"),
      always("disks.mount_path", "mount_path must be an absolute path"),
    ],
  },
};

export function createBody(app: App) {
  return Type.Object({
    shape: str("shape", { required: true, max: 100 }),
    rootfs: str("rootfs", { max: 200 }),
    name: str("name", {
      max: 63,
      re: NAME_RE,
      reMsg:
        "name must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
    }),
    disk_mib: int("disk_mib", {
      min: 0,
      max: app.cfg.maxDiskMib,
      not: [
        { type: "integer", minimum: 1, maximum: 1023 },
        "disk_mib must be 0 (shape default) or at least 1024",
      ],
    }),
    envs: envs("envs"),
    egress: egress(),
    ssh_pubkeys: sshKeys("ssh_pubkeys"),
    ingress_enabled: bool("ingress_enabled"),
    auto_pause_after_seconds: autoPause(app),
    bandwidth_quota_bytes: Type.Optional(
      Type.Unsafe<0 | null>({
        enum: [0, null],
        "x-msg": "bandwidth_quota_bytes is not settable at create; use bandwidth/recharge",
      }),
    ),
    region: str("region", { max: 100 }),
    host_id: str("host_id", { max: 200 }),
    node_selector: Type.Optional(
      Type.Unsafe<Record<string, string> | null>({
        type: ["object", "null"],
        "x-msg": "node_selector must be an object of strings",
      }),
    ),
    networks: networksField(),
    disks: Type.Optional(
      Type.Unsafe<unknown[] | null>({
        type: ["array", "null"],
        items: {
          ...Type.Object(diskAttachment("disks")),
          type: ["object", "array"],
          ...ARRAY_AS_DISK,
          "x-msg": "each disk needs disk_id and mount_path",
        },
        "x-msg": "disks must be an array of {disk_id, mount_path, sub_path?}",
      }),
    ),
  });
}
type CreateBody = Static<ReturnType<typeof createBody>>;

/**
 * What create checks against data rather than shape: the shape catalog, the images, this server's region
 * and its hosts (the images and hosts change while the server runs). Only fields the schema passed.
 */
export async function checkCreate(app: App, ctx: Ctx, errs: Record<string, string>): Promise<void> {
  const b = ctx.body as CreateBody;
  if (!errs.shape && !shapeById(b.shape)) errs.shape = `unknown shape: ${b.shape}`;
  const images = await app.images();
  if (!errs.rootfs && b.rootfs != null) {
    const name = b.rootfs || defaultImage(images);
    // Not a built-in: one of the caller's ready templates (id, or name → latest ready build), else unknown.
    if (!images.some((i) => i.name === name) && !app.templates?.resolve(ctx.principal!.user_id, name)) {
      if (name.startsWith("tpl_")) throw apiError("template_not_found", { id: name.slice(0, 100) });
      errs.rootfs = `unknown rootfs: ${name}`;
    }
  }
  if (!errs.region && b.region && b.region !== app.cfg.region)
    errs.region = `region ${b.region} is not served here (this is ${app.cfg.region})`;
  if (!errs.host_id && b.host_id && !app.hosts.byId(b.host_id))
    errs.host_id = `unknown host: ${b.host_id} (GET /v1/hosts lists them)`;
  checkEgress(ctx, errs);
}

/**
 * What egress rules mean once their grammar passed (create, fork, PUT egress): private ranges only where
 * the operator lists them (CREATEOS_SANDBOX_PRIVATE_EGRESS), as a 400 on `egress` naming the rule. Not a
 * schema: it reads the operator's settings.
 */
export function checkEgress(ctx: Ctx, errs: Record<string, string>): void {
  const rules = (ctx.body as { egress?: string[] | null } | undefined)?.egress;
  const err = Array.isArray(rules) && !errs.egress ? egressRulesError(rules) : undefined;
  if (err) errs.egress = err;
}

function defaultImage(images: { name: string; default?: boolean }[]): string {
  return images.find((i) => i.default)?.name ?? images[0]?.name ?? "devbox:1";
}

/** `[]`, `["*"]` and absent all mean "allow all"; stored as `[]`. */
export function normaliseEgress(rules: string[] | null | undefined): string[] | undefined {
  if (rules == null) return undefined;
  return rules.length === 1 && rules[0] === "*" ? [] : [...new Set(rules)];
}

/** Networks named by id or name as their ids, once each; an unknown (or another tenant's) one is a 404. */
export function networkIds(app: App, ctx: Ctx, refs: readonly { id: string }[] | null | undefined): string[] {
  return [...new Set((refs ?? []).map(({ id }) => mustFindNetwork(app, ctx.principal!.user_id, id).id))];
}

/** A checked create body as the engine's input; names networks by id. */
export async function createInput(app: App, ctx: Ctx): Promise<CreateInput> {
  const b = ctx.body as CreateBody;
  const network_ids = networkIds(app, ctx, b.networks);
  const s = shapeById(b.shape)!;
  const images = await app.images();
  const rootfs = b.rootfs || defaultImage(images);
  const tpl = images.some((i) => i.name === rootfs)
    ? undefined
    : app.templates?.resolve(ctx.principal!.user_id, rootfs);
  return {
    shape: s.id,
    vcpu: s.vcpu,
    mem_mib: s.mem_mib,
    disk_mib: b.disk_mib ? b.disk_mib : (s.default_disk_mib ?? DEFAULT_DISK_MIB),
    rootfs: tpl ? tpl.id : rootfs,
    ...(b.name ? { name: b.name } : {}),
    // the template's ENV under the sandbox's own
    envs: tpl ? { ...(JSON.parse(tpl.env) as Record<string, string>), ...(b.envs ?? {}) } : (b.envs ?? {}),
    egress: normaliseEgress(b.egress) ?? [],
    ssh_pubkeys: b.ssh_pubkeys ? mergeSshKeys([], b.ssh_pubkeys) : [],
    ingress_enabled: b.ingress_enabled ?? false,
    ...(b.auto_pause_after_seconds != null ? { auto_pause_after_seconds: b.auto_pause_after_seconds } : {}),
    // a template's image lives on the host that built it
    ...(tpl?.host_id ? { host_id: tpl.host_id } : b.host_id ? { host_id: b.host_id } : {}),
    network_ids,
  };
}

export const forkBody = Type.Object({
  start_paused: bool("start_paused"),
  ssh_pubkeys: sshKeys("ssh_pubkeys"),
  egress: egress(),
  ingress_enabled: bool("ingress_enabled"),
  envs: envs("envs"),
  bandwidth_quota_bytes: int("bandwidth_quota_bytes", { min: -1, max: Number.MAX_SAFE_INTEGER }),
  // Not in the SDK's ForkSandboxRequest: a fork joins only the networks named here (docs/ARCHITECTURE.md).
  networks: networksField(),
});

export function forkInput(app: App, ctx: Ctx): ForkInput {
  const b = ctx.body as Static<typeof forkBody>;
  const out: ForkInput = { start_paused: b.start_paused ?? false };
  const nets = networkIds(app, ctx, b.networks);
  if (nets.length) out.network_ids = nets;
  if (b.ssh_pubkeys) out.ssh_pubkeys = mergeSshKeys([], b.ssh_pubkeys);
  const eg = normaliseEgress(b.egress);
  if (eg) out.egress = eg;
  if (b.ingress_enabled != null) out.ingress_enabled = b.ingress_enabled;
  if (b.envs) out.envs = b.envs;
  if (b.bandwidth_quota_bytes != null) out.bandwidth_quota_bytes = b.bandwidth_quota_bytes;
  return out;
}

export const patchBody = (app: App) =>
  Type.Object({
    ingress_enabled: bool("ingress_enabled"),
    auto_pause_after_seconds: autoPause(app),
    disable_auto_pause: bool("disable_auto_pause"),
  });

/** Across two fields, which a schema can say but not under the key and words clients get. */
export function checkPatch(ctx: Ctx, errs: Record<string, string>): void {
  const b = ctx.body as Static<ReturnType<typeof patchBody>>;
  if (!errs.disable_auto_pause && b.disable_auto_pause === true && b.auto_pause_after_seconds != null)
    errs.disable_auto_pause = "give either auto_pause_after_seconds or disable_auto_pause, not both";
}

export const resizeBody = (app: App) =>
  Type.Object({ disk_mib: int("disk_mib", { required: true, min: 1, max: app.cfg.maxDiskMib }) });
export const egressBody = Type.Object({ egress: egress() });
export const rechargeBody = Type.Object({
  add_bytes: int("add_bytes", { required: true, min: 1, max: 2 ** 50 }),
});
export const sshKeysBody = Type.Object({
  keys: sshKeys("keys", { required: true, emptyMsg: "keys must hold at least one key" }),
});
