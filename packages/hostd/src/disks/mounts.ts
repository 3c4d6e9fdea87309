/**
 * S3 disks on one host: the grants (which alias bucket of which sandbox maps to which disk and prefix),
 * the disks' real endpoints and keys (memory only), the proxy that serves them, and the mounts in the
 * guests, made and undone by exec through the agent.
 *
 *   guest s3fs ──http──▶ 169.254.0.22:7480 (tap0) ──DNAT, namespace table ip createos_disks──▶
 *   10.200.0.1:<port> (root namespace lo) ── DiskProxy: source 10.201.<slot> names the sandbox,
 *   scope.ts checks the request, SigV4 with the real keys ──▶ the bucket's endpoint, from the host
 *
 * The guest holds only an alias bucket name and a dummy key pair; the source address cannot be forged
 * (the namespace SNATs every guest packet to its slot's address, the anti-spoof table drops others).
 */
import { type DiskMount, HostdError } from "@createos-sandbox/protocol";
import type { GuestIo } from "../guestio.js";
import type { Host } from "../host.js";
import { NEVER, firewallConfig } from "../net/firewall.js";
import { GATEWAY_IP, PROXY_IP, TAP, netnsName } from "../net/plan.js";
import { ip, nft } from "../sys/index.js";
import { DiskProxy, type DiskTarget } from "./proxy.js";
import { type Grant, aliasOf } from "./scope.js";

/** The port the guest dials on its gateway; the namespace forwards it to wherever the proxy listens. */
export const GUEST_DISK_PORT = 7480;
const MOUNT_TIMEOUT_MS = 30_000;

/** Mounts one disk; idempotent (an existing mount at the path is kept). Positional: alias sub path url. */
const MOUNT_SH = `set -e
alias=$1 sub=$2 mp=$3 url=$4
if mountpoint -q "$mp"; then exit 0; fi
command -v s3fs >/dev/null 2>&1 || { echo "s3fs binary not found in rootfs" >&2; exit 127; }
mkdir -p "$mp" /run/createos-disks
pw=/run/createos-disks/passwd
# s3fs wants a key pair to sign with; the host's proxy discards its signature, so this one is no secret.
[ -f "$pw" ] || (umask 077; echo 'signed-by-host:not-a-secret' > "$pw")
src=$alias; [ -z "$sub" ] || src="$alias:/$sub"
log=/run/createos-disks/$alias.log; : > "$log"
# s3fs checks the bucket after it has gone to the background: its verdict is in the log, or the mount is up.
s3fs "$src" "$mp" -o url="$url" -o use_path_request_style -o passwd_file="$pw" -o allow_other \\
  -o umask=0022 -o retries=2 -o connect_timeout=5 -o readwrite_timeout=30 -o stat_cache_expire=2 \\
  -o logfile="$log" -o dbglevel=err >&2
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do mountpoint -q "$mp" && exit 0; sleep 0.25; done
tail -n 3 "$log" | sed 's/^[^ ]* [^ ]* *//' >&2; echo "s3fs did not mount $mp" >&2; exit 1`;

/** Flushes and unmounts; idempotent. */
const UNMOUNT_SH = `mp=$1
mountpoint -q "$mp" || exit 0
sync
umount "$mp" 2>/dev/null || fusermount -u "$mp" || umount -l "$mp"`;

interface Ran {
  exit_code: number;
  stderr: string;
  error?: string | undefined;
}

function failure(r: Ran): string {
  const text = r.stderr.trim().split("\n").filter(Boolean);
  return text.slice(-3).join("; ").slice(0, 400) || r.error || `exit ${r.exit_code}`;
}

export class HostDisks {
  /** sandbox id → alias → grant. */
  private readonly grants = new Map<string, Map<string, Grant>>();
  private readonly targets = new Map<string, DiskTarget>();
  /** Grant → the last failure of the disk itself its requests met (cleared by a success). */
  private readonly failures = new WeakMap<Grant, string>();
  private proxy: { port: number; proxy: DiskProxy } | undefined;
  private starting: Promise<number> | undefined;

  constructor(
    private readonly host: Host,
    private readonly io: GuestIo,
  ) {}

  private grantsOf(remote: string): Map<string, Grant> | undefined {
    const m = /^(?:::ffff:)?10\.201\.(\d+)\.(\d+)$/.exec(remote);
    if (!m) return undefined;
    const slot = Number(m[1]) * 256 + Number(m[2]);
    for (const vm of this.host.vms.values())
      if (vm.rec.slot === slot && !vm.gone) return this.grants.get(vm.rec.sandbox_id);
    return undefined;
  }

  private port(): Promise<number> {
    if (this.proxy) return Promise.resolve(this.proxy.port);
    this.starting ??= (async () => {
      await ip("addr", "replace", `${PROXY_IP}/32`, "dev", "lo");
      const proxy = new DiskProxy({
        grantsOf: (a) => this.grantsOf(a),
        target: (id) => this.targets.get(id),
        outcome: (g, f) => (f ? this.failures.set(g, f) : this.failures.delete(g)),
        // the guests' own rule: the firewall's private-egress list, and never the address plan
        rules: () => ({
          privateEgress: firewallConfig(this.host.opts.privateEgress).privateEgress,
          never: NEVER,
        }),
        log: this.host.log,
      });
      const port = await proxy.listen(PROXY_IP);
      this.proxy = { port, proxy };
      return port;
    })().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /** The namespace's forward of the guest's disk port to the proxy (replaced whole: idempotent). */
  async wire(sandboxId: string): Promise<void> {
    const vm = this.host.vms.get(sandboxId);
    if (!vm || !this.grants.get(sandboxId)?.size) return;
    const port = await this.port();
    const table = `table ip createos_disks {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${TAP}" ip daddr ${GATEWAY_IP} tcp dport ${GUEST_DISK_PORT} dnat to ${PROXY_IP}:${port}
  }
}`;
    await nft(`table ip createos_disks\ndelete table ip createos_disks\n${table}\n`, netnsName(vm.rec.slot));
  }

  private async exec(sandboxId: string, script: string, args: string[]): Promise<Ran> {
    let stderr = "";
    const keep = (c: Buffer) => {
      if (stderr.length < 8192) stderr += c.toString("utf8");
    };
    const r = await this.io.exec(
      sandboxId,
      { argv: ["sh", "-c", script, "sh", ...args], bufferBytes: 64 * 1024 },
      { onStdout: keep, onStderr: keep },
      AbortSignal.timeout(MOUNT_TIMEOUT_MS),
    );
    return { exit_code: r.exit_code, stderr, error: r.error };
  }

  async mount(sandboxId: string, m: DiskMount): Promise<void> {
    if (!this.host.vms.get(sandboxId)) throw new HostdError("not_found", `no running sandbox ${sandboxId}`);
    const alias = aliasOf(m.disk_id, m.mount_path);
    const grant: Grant = {
      disk_id: m.disk_id,
      mount_path: m.mount_path,
      ...(m.sub_path ? { sub_path: m.sub_path } : {}),
    };
    const g = this.grants.get(sandboxId) ?? new Map<string, Grant>();
    this.grants.set(sandboxId, g);
    g.set(alias, grant);
    this.targets.set(m.disk_id, {
      bucket: m.bucket,
      endpoint: m.endpoint,
      region: m.region,
      use_path_style: m.use_path_style,
      access_key: m.access_key,
      secret_key: m.secret_key,
    });
    await this.wire(sandboxId);
    const url = `http://${GATEWAY_IP}:${GUEST_DISK_PORT}`;
    const r = await this.exec(sandboxId, MOUNT_SH, [alias, m.sub_path ?? "", m.mount_path, url]);
    if (r.exit_code !== 0) {
      g.delete(alias);
      throw new HostdError("bad_request", failure(r));
    }
  }

  async unmount(sandboxId: string, mountPath: string): Promise<void> {
    const g = this.grants.get(sandboxId);
    if (this.host.vms.get(sandboxId)) {
      const r = await this.exec(sandboxId, UNMOUNT_SH, [mountPath]);
      if (r.exit_code !== 0) throw new HostdError("conflict", `unmount failed: ${failure(r)}`);
    }
    for (const [alias, grant] of g ?? []) if (grant.mount_path === mountPath) g!.delete(alias);
  }

  /** Each mount of the sandbox with the failure its last requests met, if any. */
  status(sandboxId: string): { mount_path: string; error?: string }[] {
    return [...(this.grants.get(sandboxId)?.values() ?? [])].map((g) => {
      const error = this.failures.get(g);
      return { mount_path: g.mount_path, ...(error ? { error } : {}) };
    });
  }

  setCredentials(diskId: string, accessKey: string, secretKey: string): void {
    const t = this.targets.get(diskId);
    if (t) Object.assign(t, { access_key: accessKey, secret_key: secretKey });
  }

  /** The sandbox is gone from this host: its grants go with it. */
  forget(sandboxId: string): void {
    this.grants.delete(sandboxId);
  }

  async close(): Promise<void> {
    await this.proxy?.proxy.close();
    this.proxy = undefined;
  }
}
