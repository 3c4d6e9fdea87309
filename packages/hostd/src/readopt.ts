/**
 * Re-adoption on start: snapshots a crash interrupted are finished or given back first
 * (snapshot/recover.ts); then every vms/<id>/vm.json of a VM that was all the way up and whose pidfile
 * names a QEMU of ours is reconnected (QMP and agent); dead ones are cleaned and reported as `vm_exited`,
 * ones still starting (a create or fork that never answered) are discarded. Leftovers of a crash (trash
 * dirs, pooled VMs, dangling launch-path symlinks, cgroups of VMs gone) are removed; a VM dir without a
 * record that holds files is quarantined.
 *
 * Every record that is not re-adopted is cleaned only after all live VMs are: a record a crash left can
 * name a slot, launch path or cgroup that a live VM holds by now, and what a re-adopted VM holds is left
 * alone.
 */
import { existsSync } from "node:fs";
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { TIMEOUTS } from "./bringup.js";
import { hostPolicy } from "./egress.js";
import { type Host, cgroupName, pidOf } from "./host.js";
import { applyEgress, slotAddrs, teardownSlot } from "./net/index.js";
import { overlayAfterReadopt, overlayOnReadopt } from "./overlay.js";
import {
  GONE_PREFIX,
  POOL_PREFIX,
  TRASH_PREFIX,
  type VmRecord,
  holdsNothing,
  quarantine,
  readVmRecord,
} from "./records.js";
import { recoverSnapshots } from "./snapshot/recover.js";
import { vmLimits } from "./sys/cgroup.js";
import type { Machine } from "./vmm/driver.js";
import { type AgentLike, connectAgent } from "./vmm/guest.js";

export async function readopt(host: Host): Promise<void> {
  const { layout } = host;
  await recoverSnapshots(host);
  const trash: string[] = [];
  const leftovers: { name: string; dir: string; rec: VmRecord; starting: boolean }[] = [];
  for (const name of await readdir(layout.vms)) {
    const dir = join(layout.vms, name);
    if (name.startsWith(GONE_PREFIX)) {
      await rm(dir, { recursive: true, force: true });
      continue;
    }
    if (name.startsWith(TRASH_PREFIX)) {
      trash.push(dir);
      continue;
    }
    const st = await lstat(dir).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      // The launch path of a pooled VM that became a sandbox: kept while that VM exists.
      if (!existsSync(dir)) await rm(dir, { force: true });
      continue;
    }
    const rec = await readVmRecord(dir);
    if (!rec) {
      await host.killStale(dir);
      // mkdir comes before vm.json: an empty dir is a start that got no further.
      if (await holdsNothing(dir)) await rm(dir, { recursive: true });
      else await quarantine(layout, dir, "VM dir without vm.json", host.log);
      continue;
    }
    // One still starting: its create or fork never answered (the control plane redoes or fails it); a
    // resume's files went back to its snapshot in recoverSnapshots.
    const starting = rec.state === "starting";
    if (starting || !(await readoptVm(host, name, dir, rec))) leftovers.push({ name, dir, rec, starting });
  }
  const adopted = [...host.vms.values()];
  const slots = new Set(adopted.map((v) => v.rec.slot));
  const pids = new Set(adopted.map((v) => v.machine.pid));
  const launches = new Set(adopted.map((v) => v.rec.launch_dir ?? v.dir));
  const cgroups = new Set(adopted.map((v) => cgroupName(v.rec, v.dir)));
  for (const { name, dir, rec, starting } of leftovers) {
    if (starting) host.log.warn("discarding a VM that was still starting", { sandbox_id: rec.sandbox_id });
    await host.killStale(dir, rec.launch_dir, pids);
    await host.cleanupVmFiles(rec, dir, {
      slot: slots.has(rec.slot),
      launch: launches.has(rec.launch_dir ?? dir),
      cgroup: cgroups.has(cgroupName(rec, dir)),
    });
    if (!starting && !name.startsWith(POOL_PREFIX))
      host.emit({
        type: "vm_exited",
        sandbox_id: rec.sandbox_id,
        reason: "the VM was not running when the host daemon started",
      });
  }
  // A paused VM's old dir: its slot is freed before the dir is removed, so a crash in between leaves a
  // record naming a slot another VM may hold by now (and a resumed VM runs from the same launch path).
  for (const dir of trash) {
    const rec = await readVmRecord(dir);
    if (rec) {
      await host.killStale(dir, rec.launch_dir ?? layout.vmDir(rec.sandbox_id), pids);
      if (!slots.has(rec.slot)) await teardownSlot(rec.slot).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  }
  await overlayAfterReadopt(host).catch((e) =>
    host.log.warn("private networks not pruned", { error: String(e) }),
  );
  for (const cg of await host.cgroups.names()) if (!cgroups.has(cg)) await host.removeCgroup(cg);
}

/** Reconnects a VM whose QEMU still runs; false if it cannot be (the caller cleans it). */
async function readoptVm(host: Host, name: string, dir: string, rec: VmRecord): Promise<boolean> {
  host.slots.claim(rec.slot);
  const pid = await pidOf(dir);
  const addrs = slotAddrs(rec.slot);
  let machine: Machine | undefined;
  let agent: AgentLike | undefined;
  try {
    // Pooled VMs belong to no sandbox: they are never re-adopted. Nor is one whose disk left its dir: a
    // pause that died after moving the files into its snapshot (the snapshot's recovery keeps them), whose
    // QEMU may not have exited yet — resumed, it would write into what is the snapshot's RAM and disk now.
    if (pid > 0 && !name.startsWith(POOL_PREFIX) && existsSync(join(dir, "disk.qcow2")))
      machine = await host.driver.adopt(host.machineConfig(rec, dir, addrs), pid, rec.launch_dir);
    if (machine) {
      await host.cgroups.adopt(cgroupName(rec, dir), pid, vmLimits(rec));
      // A daemon died mid-pause: the guest is intact, let it run again.
      if (machine.state === "paused") await machine.resume();
      agent = await connectAgent(machine.paths.agent, TIMEOUTS.reconnectAgentMs);
    }
  } catch (e) {
    host.log.warn("cannot re-adopt VM", { sandbox_id: rec.sandbox_id, error: String(e) });
    agent?.close();
    await machine?.stop(TIMEOUTS.readoptStopMs).catch(() => undefined);
    machine = undefined;
  }
  if (machine && agent) {
    // Its resolver and egress table outlived the old daemon with the namespace; they are put in force
    // again from the record (a namespace made before resolvers existed gets one).
    await applyEgress(addrs, hostPolicy(host, rec.egress), host.nameProxy?.ports).catch((e) =>
      host.log.warn("no DNS resolver or egress rules for a re-adopted VM", {
        sandbox_id: rec.sandbox_id,
        error: String(e),
      }),
    );
    await overlayOnReadopt(host, rec, addrs).catch((e) =>
      host.log.warn("private networks not rebuilt for a re-adopted VM", {
        sandbox_id: rec.sandbox_id,
        error: String(e),
      }),
    );
    host.register({ rec, dir, machine, agent, addrs });
    host.log.info("re-adopted VM", { sandbox_id: rec.sandbox_id, pid });
    return true;
  }
  return false;
}
