/**
 * S3 disks in the control plane: registrations (keys sealed at rest, checked against the bucket first)
 * and attachments (rows here, mounts on the sandbox's host). The host daemon gets the clear keys for the
 * mounts it serves — its disk proxy re-signs the guest's requests — and nothing else ever does: no
 * response, no log line, no guest.
 */
import {
  ApiError,
  type HostDaemon,
  apiError,
  validationError,
  type api as wire,
} from "@createos-sandbox/protocol";
import { mapHostdError } from "../hosterr.js";
import type { Logger } from "../log.js";
import { type AttachmentRow, type DiskRow, DiskStore } from "../store/disks.js";
import type { SandboxRow } from "../store/types.js";
import { newDiskId } from "../ulid.js";
import { checkBucket } from "./check.js";
import { KeyBox } from "./keybox.js";

/** Mount paths no disk may cover: the guest's own system (and everything under it). */
const SYSTEM_DIRS = [
  "bin",
  "boot",
  "dev",
  "etc",
  "lib",
  "lib32",
  "lib64",
  "proc",
  "run",
  "sbin",
  "sys",
  "usr",
];

export interface AttachInput {
  disk_id: string;
  mount_path: string;
  sub_path?: string;
}

export function diskView(d: DiskRow): wire.DiskView {
  return { id: d.id, name: d.name, kind: d.kind, config: d.config, created_at: d.created_at };
}

/** A mount path as one canonical string (`/mnt/data/` and `/mnt//data` are `/mnt/data`), or why not. */
export function mountPathProblem(p: string): string | undefined {
  const parts = p.split("/").filter(Boolean);
  if (parts.length === 0) return "mount_path must not be /";
  if (parts.some((x) => x === "." || x === "..")) return "mount_path must not contain . or ..";
  if (SYSTEM_DIRS.includes(parts[0]!)) return `mount_path must not be under /${parts[0]}`;
  return undefined;
}

export const canonicalMountPath = (p: string) => `/${p.split("/").filter(Boolean).join("/")}`;

const text = (e: unknown) => (e instanceof Error ? e.message : String(e)).slice(0, 500);

/** What a client may read of a host's failure: the catalog's words for it (the host's own go to the log). */
function publicFailure(e: unknown, ctx: { id: string; action: string }): string {
  const mapped = mapHostdError(e, ctx);
  return mapped instanceof ApiError ? mapped.message : apiError("internal").message;
}

/** A host that holds a disk's mounts, as a rotation reaches it. */
export interface DiskHost {
  /** As clients may see it (hosterr.ts publicHostId). */
  name: string;
  daemon: HostDaemon;
}

export class Disks {
  readonly store: DiskStore;
  private readonly box: KeyBox;

  constructor(
    dbPath: string,
    keyFile: string,
    operatorKey: boolean,
    private readonly log: Logger,
  ) {
    this.box = KeyBox.load(keyFile, !operatorKey);
    this.store = DiskStore.open(dbPath);
  }

  close(): void {
    this.store.close();
  }

  private seal(id: string, c: wire.DiskCredentials): string {
    return this.box.seal(JSON.stringify({ a: c.access_key, s: c.secret_key }), id);
  }

  private keys(d: DiskRow): { access_key: string; secret_key: string } {
    const o = JSON.parse(this.box.open(d.secret, d.id)) as { a: string; s: string };
    return { access_key: o.a, secret_key: o.s };
  }

  find(userId: string, ref: string): DiskRow {
    const d = this.store.get(userId, ref);
    if (!d) throw apiError("disk_not_found", { id: ref.slice(0, 100) });
    return d;
  }

  /** Idempotent by name: an existing registration of that name is answered as it is. */
  async create(userId: string, req: wire.DiskCreateRequest): Promise<DiskRow> {
    const have = this.store.get(userId, req.name);
    if (have) return have;
    const config: DiskRow["config"] = { bucket: req.config.bucket, endpoint: req.config.endpoint };
    if (req.config.region) config.region = req.config.region;
    if (req.config.use_path_style !== undefined) config.use_path_style = req.config.use_path_style;
    await checkBucket(config, req.credentials);
    const id = newDiskId();
    const row: DiskRow = {
      id,
      user_id: userId,
      name: req.name,
      kind: "s3",
      config,
      secret: this.seal(id, req.credentials),
      created_at: new Date().toISOString(),
    };
    try {
      this.store.create(row);
    } catch (e) {
      // A concurrent create of the same name won: answer its row, as the idempotent call should.
      const won = /UNIQUE/.test(String(e)) ? this.store.get(userId, req.name) : undefined;
      if (won) return won;
      throw e;
    }
    this.log.info("disk registered", { disk_id: id, bucket: config.bucket, endpoint: config.endpoint });
    return row;
  }

  /**
   * New keys: sealed, then handed to every host that is up (the caller leaves out the hosts that are down:
   * they get the keys from the remount when they are back). A host that fails the call is a 503 once the
   * others have the keys: the keys are stored, so the client's retry (the same PATCH) hands them over.
   */
  async rotate(d: DiskRow, c: wire.DiskCredentials, hosts: readonly DiskHost[]): Promise<void> {
    this.store.setSecret(d.id, this.seal(d.id, c));
    const failed: string[] = [];
    await Promise.all(
      hosts.map((h) =>
        h.daemon.setDiskCredentials(d.id, c.access_key, c.secret_key).catch((e: unknown) => {
          failed.push(h.name);
          this.log.warn("disk credentials not taken by a host", {
            disk_id: d.id,
            host_id: h.name,
            err: text(e),
          });
        }),
      ),
    );
    if (failed.length)
      throw apiError("host_unavailable", {
        reason: `${failed.sort().join(", ")} did not take the new credentials (they are stored); retry`,
      });
    this.log.info("disk credentials rotated", { disk_id: d.id });
  }

  delete(d: DiskRow): void {
    const n = this.store.holders(d.id);
    if (n > 0) throw apiError("disk_in_use", { id: d.id, count: n });
    this.store.softDelete(d.id);
  }

  /**
   * Resolves and checks the attachments a create or an attach asks for, before any VM exists (404 on an
   * unknown disk). `at` is the body's key of the attachment (`disks` on create, `disk` on attach): a
   * mount path refused is reported under `<at>.mount_path`, as the schema reports its own failures.
   */
  resolve(userId: string, list: AttachInput[], at: "disk" | "disks"): AttachmentRow[] {
    const seen = new Set<string>();
    return list.map((a) => {
      const d = this.find(userId, a.disk_id);
      const mount_path = canonicalMountPath(a.mount_path);
      const problem = mountPathProblem(mount_path);
      if (problem) throw validationError({ [`${at}.mount_path`]: problem });
      if (seen.has(mount_path)) throw apiError("mount_path_taken", { path: mount_path });
      seen.add(mount_path);
      const sub = a.sub_path?.replace(/^\/+|\/+$/g, "");
      return {
        sandbox_id: "",
        disk_id: d.id,
        mount_path,
        ...(sub ? { sub_path: sub } : {}),
        mount_status: "pending" as const,
      };
    });
  }

  /** Records the attachment and mounts it now; a failed mount is kept with its error (listDisks shows it). */
  async attach(row: SandboxRow, a: AttachmentRow, daemon: HostDaemon): Promise<AttachmentRow> {
    const at = { ...a, sandbox_id: row.id, mount_status: "pending" as const };
    if (!this.store.attach(at)) throw apiError("mount_path_taken", { path: a.mount_path });
    return this.mount(row, at, daemon);
  }

  /**
   * The attachments of a create, resolved before its VM was made, once it runs. A disk deleted while the
   * VM booted is not mounted (its id, not its name: a registration of the same name since is another
   * bucket): the attachment keeps `disk_not_found` as its mount_error, as a failed mount keeps its own.
   * The row is recorded first, so a delete from now on sees the disk held.
   */
  async attachAtBoot(row: SandboxRow, list: AttachmentRow[], daemon: () => HostDaemon): Promise<void> {
    for (const a of list) {
      const at = { ...a, sandbox_id: row.id, mount_status: "pending" as const };
      if (!this.store.attach(at)) continue;
      if (this.store.get(row.user_id, a.disk_id)) {
        await this.mount(row, at, daemon);
        continue;
      }
      const msg = apiError("disk_not_found", { id: a.disk_id }).message;
      this.store.setStatus(row.id, a.mount_path, "error", msg);
      this.log.warn("disk deleted before its mount", { sandbox_id: row.id, disk_id: a.disk_id });
    }
  }

  /**
   * Mounts on the sandbox's host. A failure is kept in mount_error in the catalog's words for it (a
   * refusal about the mount itself, bad_request, is the guest's s3fs saying why); the host's own text,
   * which names its paths and addresses, goes to the log only.
   */
  async mount(
    row: SandboxRow,
    a: AttachmentRow,
    daemon: HostDaemon | (() => HostDaemon),
  ): Promise<AttachmentRow> {
    const d = this.store.byId(a.disk_id)!;
    try {
      await (typeof daemon === "function" ? daemon() : daemon).mountDisk(row.id, {
        disk_id: d.id,
        mount_path: a.mount_path,
        ...(a.sub_path ? { sub_path: a.sub_path } : {}),
        ...d.config,
        ...this.keys(d),
      });
      this.store.setStatus(row.id, a.mount_path, "mounted");
      return { ...a, mount_status: "mounted" };
    } catch (e) {
      const msg = publicFailure(e, { id: row.id, action: "mount a disk on" }).slice(0, 500);
      this.store.setStatus(row.id, a.mount_path, "error", msg);
      this.log.warn("disk mount failed", {
        sandbox_id: row.id,
        disk_id: d.id,
        mount_path: a.mount_path,
        err: text(e),
      });
      return { ...a, mount_status: "error", mount_error: msg };
    }
  }

  /**
   * A host (re)attached: its daemon may have restarted and lost the mounts' grants, which live in its
   * memory. Mounting again is idempotent in the guest (a live s3fs is kept) and gives the daemon the grants
   * and keys back, so the guests' s3fs carry on at their next retry. Not an attachment of a disk deleted
   * since (one a create recorded after the disk went, with its mount_error): that registration is gone.
   */
  async remountHost(
    hostId: string,
    daemon: HostDaemon,
    load: (id: string) => Promise<SandboxRow | undefined>,
  ) {
    for (const a of this.store.runningOn(hostId)) {
      const row = await load(a.sandbox_id);
      if (row && this.store.get(row.user_id, a.disk_id)) await this.mount(row, a, daemon);
    }
  }

  /**
   * Flushes and unmounts, then forgets the attachment. False when there was none. A host or agent that
   * fails the unmount leaves the attachment as it was (its status back from `unmounting`), so the listing
   * stays true and the detach can be retried; the client gets the catalog's error for the failure.
   */
  async detach(row: SandboxRow, diskId: string, mountPath: string, daemon?: HostDaemon): Promise<boolean> {
    const path = canonicalMountPath(mountPath);
    const a = this.store.attachments(row.id).find((x) => x.disk_id === diskId && x.mount_path === path);
    if (!a) return false;
    if (daemon) {
      this.store.setStatus(row.id, path, "unmounting");
      try {
        await daemon.unmountDisk(row.id, path);
      } catch (e) {
        this.store.setStatus(row.id, path, a.mount_status, a.mount_error);
        this.log.warn("disk unmount failed", {
          sandbox_id: row.id,
          disk_id: diskId,
          mount_path: path,
          err: text(e),
        });
        throw mapHostdError(e, { id: row.id, action: "detach a disk from" });
      }
    }
    return this.store.detach(row.id, diskId, path);
  }

  /**
   * Live mounts as the host's proxy last saw them: a disk that broke after it was mounted (keys rotated to
   * bad ones, the bucket deleted, the endpoint gone) shows `error` with why, and `mounted` again once a
   * request succeeds. Mounts that failed to mount are the host's no longer and keep their error.
   */
  async refresh(row: SandboxRow, daemon: HostDaemon): Promise<void> {
    const live = await daemon.diskStatus(row.id).catch(() => undefined);
    for (const l of live ?? []) {
      const a = this.store.attachments(row.id).find((x) => x.mount_path === l.mount_path);
      if (!a || a.mount_status === "unmounting" || a.mount_status === "pending") continue;
      if (l.error && a.mount_error !== l.error) this.store.setStatus(row.id, a.mount_path, "error", l.error);
      if (!l.error && a.mount_status !== "mounted") this.store.setStatus(row.id, a.mount_path, "mounted");
    }
  }

  views(sandboxId: string): wire.SandboxDiskView[] {
    return this.store.attachments(sandboxId).map((a) => {
      const d = this.store.byId(a.disk_id)!;
      const v: wire.SandboxDiskView = {
        disk_id: d.id,
        name: d.name,
        kind: d.kind,
        config: d.config,
        mount_path: a.mount_path,
        mount_status: a.mount_status,
      };
      if (a.sub_path) v.sub_path = a.sub_path;
      if (a.mount_error) v.mount_error = a.mount_error;
      return v;
    });
  }
}
