/**
 * The one bring-up pipeline every VM start goes through (warm create, cold create, pooled adopt, resume,
 * fork):
 *
 *   place (slot, dir, vm.json) → files (ram, disk) → cgroup → configure → start | restore → QEMU into
 *     its cgroup → resume → agent up → [after-agent hook] → identity (configure | sync) → grow disk
 *     → register
 *
 * Each step that leaves something behind pushes its undo on a stack; when a later step fails the stack
 * runs in reverse, so a failed start undoes exactly what it did (and the guest console's tail, the only
 * record of why a boot or restore failed, is added to the error).
 */
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type VmSpec } from "@createos-sandbox/protocol";
import { netOnBringUp } from "./egress.js";
import { type Host, type VmParts, cgroupName } from "./host.js";
import type { SlotAddrs } from "./net/index.js";
import { overlayOnBringUp } from "./overlay.js";
import { type BaseRecord, type VmRecord, writeVmRecord } from "./records.js";
import { vmLimits } from "./sys/cgroup.js";
import { readTail } from "./sys/nofollow.js";
import type { Machine } from "./vmm/driver.js";
import { type AgentLike, connectAgentWith } from "./vmm/guest.js";

/** Every wait of the lifecycle, in one place. */
export const TIMEOUTS = {
  /** Cold boot to the agent's hello: kernel and init from scratch (minutes under TCG on a busy host). */
  coldAgentMs: 120_000,
  /** Restore (warm create, resume, fork) to the agent's hello: the guest was already up when saved. */
  restoreAgentMs: 30_000,
  /** Reconnecting to a guest that kept running (pooled adopt, re-adoption after a restart). */
  reconnectAgentMs: 10_000,
  /** QEMU quit grace before SIGKILL when undoing a failed start or discarding a pooled VM: nothing to save. */
  abortStopMs: 500,
  /** QEMU quit grace on destroy and after a pause's state transfer. */
  stopMs: 1000,
  /** QEMU quit grace for a VM re-adoption could not reconnect to. */
  readoptStopMs: 200,
  /** Delay before the warm pool refills, so the create that emptied it finishes first. */
  poolRefillMs: 500,
  /** poolIdle() checks this often, at most `poolIdlePolls` times. */
  poolIdlePollMs: 100,
  poolIdlePolls: 100,
  /** After SIGKILL of a stale QEMU, check this often, at most `staleKillPolls` times, that it is gone. */
  staleKillPollMs: 5,
  staleKillPolls: 400,
} as const;

/** TCG translation cache when the open options name none, MiB. */
export const DEFAULT_TB_SIZE_MIB = 32;

export const MIB = 1024 * 1024;

/** How much of the guest console a failed start's error carries (the end: where the guest gave up). */
const CONSOLE_TAIL_CHARS = 1500;

export function now(): number {
  return performance.now();
}

/** Wall time per step of one operation, for the logs (where the milliseconds go). */
export function stopwatch(): { lap(name: string): void; laps: Record<string, number> } {
  let last = now();
  const laps: Record<string, number> = {};
  return {
    laps,
    lap(name: string) {
      const t = now();
      laps[name] = Math.round((t - last) * 10) / 10;
      last = t;
    },
  };
}

/** Undo steps of a bring-up, run last-first; each failure is ignored so the rest still run. */
export class Undo {
  private readonly steps: (() => Promise<unknown>)[] = [];

  push(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.steps.splice(0).reverse()) await step().catch(() => undefined);
  }
}

/** A VM given its slot, dir and record (vm.json written), before its files and machine. */
export interface Placed {
  rec: VmRecord;
  dir: string;
  addrs: SlotAddrs;
}

/** Boot the image from scratch, or restore this device state (RAM is the RAM file in the VM dir). */
export type Boot = "cold" | { restore: string; ramInState?: boolean };

export interface Plan {
  spec: VmSpec;
  /**
   * A new slot, VM dir and record on this base, booted so; or a VM already placed and running (pooled),
   * whose agent connection is kept when it has one (it survives the dir's rename).
   */
  start: { base: BaseRecord; boot: Boot } | { running: Placed & { machine: Machine; agent?: AgentLike } };
  /** Puts the VM's ram and disk.qcow2 in its dir, pushing the undo of what it did. */
  files(p: Placed, undo: Undo): Promise<void>;
  agentMs: number;
  /** Runs once the agent is up, before the identity (a cold boot captures the warm snapshot here). */
  afterAgent?(vm: VmParts): Promise<void>;
  /** `configure`: a new sandbox identity; `sync`: the same sandbox, only its clock and RNG move on. */
  identity: "configure" | "sync";
  /** Whether the root disk must grow to the spec's disk_mib (asked once the files are in place). */
  grow(): boolean;
  /** Register the VM as the sandbox (false: a pooled VM, which belongs to no sandbox yet). */
  register: boolean;
  /**
   * A restore whose files belong to a snapshot (resume): `mark` runs before the guest's first instruction
   * (from then on its RAM no longer matches the saved device state), `undo` — first on failure, while QEMU
   * still runs — saves the device state again so the files given back are a consistent snapshot.
   */
  guestRuns?: { mark(): Promise<void>; undo(m: Machine): Promise<void> };
}

export async function bringUp(
  host: Host,
  plan: Plan,
): Promise<{ vm: VmParts; laps: Record<string, number> }> {
  const undo = new Undo();
  const sw = stopwatch();
  const start = plan.start;
  let p: Placed | undefined;
  try {
    if ("running" in start) {
      const placed = start.running;
      // Read at undo time: a pooled adopt moves the VM to its sandbox's dir in `files`.
      undo.push(() => host.cleanupVmFiles(placed.rec, placed.dir));
      undo.push(() => placed.machine.stop(TIMEOUTS.abortStopMs));
      p = placed;
    } else p = await place(host, plan.spec, start.base, undo);
    sw.lap("place");
    // The sandbox's egress allowlist, bandwidth quota and private networks are in force before its guest
    // runs (egress.ts, overlay.ts), applied once the files are in place: a pooled VM's adoption puts a new
    // record in place there, and what they record must land in that one (recorded in the pool's, the
    // rules were lost, and the name proxy and a re-adoption used the pool's own).
    await plan.files(p, undo);
    await netOnBringUp(host, p.rec, p.addrs, plan.spec);
    await overlayOnBringUp(host, p.rec, p.addrs, plan.spec);
    sw.lap("copy");
    const machine =
      "running" in start
        ? await recgroup(host, p, plan.spec, start.running.machine)
        : await boot(host, p, plan, start.boot, undo, sw.lap);
    sw.lap("restore");
    const kept = "running" in start ? start.running.agent : undefined;
    // The identity rides on the hello (one round trip after a restore), except where something must run
    // before it (a cold boot's warm capture, which must not carry it) or the connection is kept (pooled).
    const fold = !kept && !plan.afterAgent;
    const up = kept
      ? { agent: kept, configured: false }
      : await connectAgentWith(
          machine.paths.agent,
          plan.agentMs,
          fold ? () => identityParams(plan.spec, plan.identity) : undefined,
        );
    const agent = up.agent;
    undo.push(async () => agent.close());
    sw.lap("agent");
    // Of that, what the guest spent applying the identity (the rest: its wake-up and the round trip).
    if ("configureUs" in up && up.configureUs !== undefined)
      sw.laps.guest_configure = Math.round(up.configureUs / 100) / 10;
    const vm: VmParts = { rec: p.rec, dir: p.dir, machine, agent, addrs: p.addrs };
    await plan.afterAgent?.(vm);
    // Not folded, or an agent older than the fold (a stale image): the identity as its own call.
    if (!up.configured) await identity(agent, plan.spec, plan.identity);
    sw.lap("configure");
    if (plan.grow()) await growDisk(vm, plan.spec.disk_mib);
    sw.lap("grow");
    if (plan.register) {
      // Re-adoption discards a VM still `starting` (records.ts): only one that is all the way up is kept.
      p.rec.state = "running";
      await writeVmRecord(p.dir, p.rec);
      host.register(vm);
    }
    sw.lap("register");
    return { vm, laps: sw.laps };
  } catch (e) {
    if (p && e instanceof Error) {
      // QEMU's dir: a console.log that is a link to a host file must not end up in an error message.
      const con = await readTail(join(p.dir, "console.log"), 4 * CONSOLE_TAIL_CHARS).catch(() => "");
      if (con) e.message += `\n--- guest console (last lines) ---\n${con.slice(-CONSOLE_TAIL_CHARS)}`;
    }
    await undo.run();
    throw e;
  }
}

/** A slot from the namespace pool, the VM dir and its vm.json. */
async function place(host: Host, spec: VmSpec, base: BaseRecord, undo: Undo): Promise<Placed> {
  const dir = host.layout.vmDir(spec.sandbox_id);
  const addrs = await host.netPool.acquire();
  const rec: VmRecord = {
    ...base,
    sandbox_id: spec.sandbox_id,
    hostname: spec.hostname,
    slot: addrs.slot,
    ip: addrs.sandboxIp,
    disk_mib: spec.disk_mib,
    created_at: new Date().toISOString(),
    cgroup: `${spec.sandbox_id}.${randomBytes(4).toString("hex")}`,
    state: "starting",
  };
  undo.push(() => host.cleanupVmFiles(rec, dir));
  await mkdir(dir, { recursive: true });
  await writeVmRecord(dir, rec);
  await host.netPool.letGo(addrs.slot);
  return { rec, dir, addrs };
}

/**
 * The VM's cgroup is made (with its limits) before QEMU starts, and the jailer joins it before it execs
 * QEMU, so the VMM never runs outside it; `inCgroup` checks that (and moves it, should the jailer not
 * have). The cgroup's undo runs after the QEMU stop's, since a cgroup holding a process cannot be removed.
 */
async function boot(
  host: Host,
  p: Placed,
  plan: Plan,
  how: Boot,
  undo: Undo,
  lap: (name: string) => void,
): Promise<Machine> {
  const cg = cgroupName(p.rec, p.dir);
  await host.cgroups.create(cg, limitsOf(p.rec, plan.spec));
  undo.push(() => host.cgroups.remove(cg));
  lap("cgroup");
  const m = host.driver.configure(host.machineConfig(p.rec, p.dir, p.addrs));
  undo.push(() => m.stop(TIMEOUTS.abortStopMs));
  if (how === "cold") {
    await m.start();
    await inCgroup(host, cg, m);
  } else {
    await m.restore(how.restore, { ramInState: how.ramInState });
    lap("launch_state");
    await inCgroup(host, cg, m);
    const runs = plan.guestRuns;
    if (runs) {
      await runs.mark();
      undo.push(() => runs.undo(m));
    }
    await m.resume();
  }
  return m;
}

async function inCgroup(host: Host, cg: string, m: Machine): Promise<void> {
  if (!(await host.cgroups.contains(cg, pidAfterStart(m)))) await host.cgroups.enter(cg, pidAfterStart(m));
}

/**
 * A pooled VM becoming a sandbox keeps its cgroup, now with the sandbox's limits (its CPU quota). QEMU
 * is already in it (its threads were born there), so it is moved only if something took it out.
 */
async function recgroup(host: Host, p: Placed, spec: VmSpec, m: Machine): Promise<Machine> {
  const cg = cgroupName(p.rec, p.dir);
  await host.cgroups.create(cg, limitsOf(p.rec, spec));
  await inCgroup(host, cg, m);
  return m;
}

function limitsOf(rec: VmRecord, spec: VmSpec) {
  return vmLimits({ ...rec, cpu_quota_pct: spec.cpu_quota_pct });
}

function pidAfterStart(m: Machine): number {
  if (m.pid === undefined) throw new HostdError("internal", "the VMM started but reported no pid");
  return m.pid;
}

function identity(agent: AgentLike, spec: VmSpec, kind: "configure" | "sync"): Promise<unknown> {
  const p = identityParams(spec, kind);
  if (kind === "sync") return agent.sync({ time_ns: p.time_ns, entropy: p.entropy });
  return agent.configure({
    hostname: spec.hostname,
    envs: spec.envs,
    time_ns: p.time_ns,
    entropy: p.entropy,
  });
}

/** configure's fields for `kind`: sync moves only the clock and the RNG on. */
function identityParams(spec: VmSpec, kind: "configure" | "sync") {
  const clock = { time_ns: timeNs(), entropy: randomBytes(64).toString("base64") };
  return kind === "sync" ? clock : { hostname: spec.hostname, envs: spec.envs, ...clock };
}

function timeNs(): number {
  // Number loses sub-microsecond precision at this magnitude, which is far below what a guest clock needs.
  return Date.now() * 1e6;
}

/** block_resize to `diskMib` and grow the guest's ext4 to match. */
export async function growDisk(vm: { machine: Machine; agent: AgentLike }, diskMib: number): Promise<void> {
  await vm.machine.resizeDisk(diskMib * MIB);
  await vm.agent.resizeFs("/dev/vda");
}

/** Stops a VM that belongs to no sandbox (a pooled one) and frees everything it holds. */
export async function discard(host: Host, vm: VmParts): Promise<void> {
  vm.agent.close();
  await vm.machine.stop(TIMEOUTS.abortStopMs).catch(() => undefined);
  await host.cleanupVmFiles(vm.rec, vm.dir).catch(() => undefined);
}
