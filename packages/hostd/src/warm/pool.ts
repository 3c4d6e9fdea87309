/**
 * Restored VMs kept running per recently used (image, shape, disk), so a create only renames one into
 * place and configures it. Under TCG a fresh restore spends most of its time re-translating guest code;
 * a pooled VM has already done that.
 */
import { randomUUID } from "node:crypto";
import { rename, symlink } from "node:fs/promises";
import type { VmRuntime, VmSpec } from "@createos-sandbox/protocol";
import { TIMEOUTS, bringUp, discard } from "../bringup.js";
import { type Host, type VmParts, runtimeOf } from "../host.js";
import { POOL_PREFIX, type VmRecord, writeVmRecord } from "../records.js";
import { restoreWarm } from "./restore.js";

/** Shapes with pooled VMs at most: older ones are dropped (their VMs stopped) as new ones are used. */
const MAX_POOL_KEYS = 2;

export class WarmPool {
  /** Ready restored VMs by warm key, most recently used key last. */
  private readonly ready = new Map<string, VmParts[]>();
  private readonly specs = new Map<string, { warm: string; spec: VmSpec }>();
  private readonly filling = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly host: Host) {}

  private get target(): number {
    return this.host.opts.warmPool ?? 1;
  }

  /** RAM promised to pooled VMs, MiB (they count against capacity like sandboxes). */
  promisedMib(): number {
    let mib = 0;
    for (const list of this.ready.values()) for (const pv of list) mib += pv.rec.mem_mib;
    return mib;
  }

  /** Marks `key` as recently used, so the pool keeps VMs of it (and drops the least recent shape). */
  note(key: string, warm: string, spec: VmSpec): void {
    if (this.target <= 0 || this.host.closed) return;
    this.specs.delete(key);
    this.specs.set(key, { warm, spec });
    while (this.specs.size > MAX_POOL_KEYS) {
      const oldest = this.specs.keys().next().value as string;
      this.specs.delete(oldest);
      for (const pv of this.ready.get(oldest) ?? []) void discard(this.host, pv);
      this.ready.delete(oldest);
    }
    this.scheduleFill();
  }

  /** The warm snapshots the pool restores from: the cache cap keeps them. */
  warmDirs(): Set<string> {
    return new Set([...this.specs.values()].map((s) => s.warm));
  }

  take(key: string): VmParts | undefined {
    const list = this.ready.get(key);
    while (list && list.length > 0) {
      const pv = list.shift();
      if (pv && pv.machine.state === "running") return pv;
      if (pv) void discard(this.host, pv);
    }
    return undefined;
  }

  /** A pooled VM becomes the sandbox: its dir is renamed into place (QEMU keeps its open files and sockets). */
  async adopt(pv: VmParts, spec: VmSpec, t0: number): Promise<VmRuntime> {
    const dir = this.host.layout.vmDir(spec.sandbox_id);
    const rec: VmRecord = {
      ...pv.rec,
      sandbox_id: spec.sandbox_id,
      hostname: spec.hostname,
      created_at: new Date().toISOString(),
      launch_dir: pv.rec.launch_dir ?? pv.dir,
    };
    const { laps } = await bringUp(this.host, {
      spec,
      start: { running: pv },
      files: async () => {
        // The agent connection stays open across the rename (a reconnect would find the socket through
        // the symlink below).
        await rename(pv.dir, dir);
        // QEMU reopens its disk by the path it was started with (e.g. read-only when a snapshot
        // inactivates it): the old path must keep resolving.
        await symlink(dir, pv.dir);
        pv.dir = dir;
        pv.rec = rec;
        await writeVmRecord(dir, rec);
      },
      agentMs: TIMEOUTS.reconnectAgentMs,
      identity: "configure",
      grow: () => false,
      register: true,
    });
    this.scheduleFill();
    const rt = runtimeOf(spec, rec, t0, "warm");
    this.host.log.info("VM created (warm, pooled)", {
      sandbox_id: spec.sandbox_id,
      spawn_ms: rt.spawn_ms,
      ...laps,
    });
    return rt;
  }

  private scheduleFill(delayMs: number = TIMEOUTS.poolRefillMs): void {
    if (this.timer || this.host.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      for (const [key, { warm, spec }] of this.specs) {
        if (this.filling.has(key)) continue;
        const p = this.fill(key, warm, spec)
          .catch((e) => this.host.log.warn("warm pool refill failed", { error: String(e) }))
          .finally(() => this.filling.delete(key));
        this.filling.set(key, p);
      }
    }, delayMs);
    this.timer.unref();
  }

  private async fill(key: string, warm: string, spec: VmSpec): Promise<void> {
    for (;;) {
      const list = this.ready.get(key) ?? [];
      if (this.host.closed || !this.specs.has(key) || list.length >= this.target) return;
      const id = `${POOL_PREFIX}${randomUUID().slice(0, 12)}`;
      // A pooled VM is no sandbox's: it joins no private network (its adoption programs the sandbox's).
      const { vm } = await restoreWarm(
        this.host,
        { ...spec, sandbox_id: id, hostname: "pool", envs: {}, networks: undefined },
        warm,
        false,
      );
      // restoreWarm ran configure once; run an exec too, so the guest code a new sandbox runs first is
      // already translated (TCG) rather than translated on the caller's clock.
      await vm.agent.exec({ argv: ["true"] });
      if (this.host.closed || !this.specs.has(key)) {
        await discard(this.host, vm);
        return;
      }
      list.push(vm);
      this.ready.set(key, list);
    }
  }

  /** Resolves once no pool refill is running (benchmarks wait on it between repetitions). */
  async idle(): Promise<void> {
    for (let i = 0; i < TIMEOUTS.poolIdlePolls; i++) {
      if (this.timer) await new Promise((r) => setTimeout(r, TIMEOUTS.poolIdlePollMs));
      else if (this.filling.size > 0) await Promise.all(this.filling.values());
      else return;
    }
  }

  /** Stops every pooled VM: they are no sandbox's, so nothing would re-adopt them. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await Promise.all(this.filling.values());
    for (const list of this.ready.values()) for (const pv of list) await discard(this.host, pv);
    this.ready.clear();
  }
}
