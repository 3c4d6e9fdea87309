/**
 * Resume: the snapshot is consumed — its RAM file and top disk layer are renamed into the new VM dir (a
 * `share=on` RAM file is written by the VM that maps it), restored, and the agent's clock and RNG synced.
 */
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type SnapshotRef, type VmRuntime, type VmSpec } from "@createos-sandbox/protocol";
import { TIMEOUTS, bringUp, now } from "../bringup.js";
import { type Host, runtimeOf } from "../host.js";
import { baseOf, snapMeta, validateSpec } from "../records.js";

export async function resume(host: Host, snapshot: SnapshotRef, spec: VmSpec): Promise<VmRuntime> {
  validateSpec(spec);
  host.checkCapacity(snapshot.mem_mib);
  return host.withReservedId(spec.sandbox_id, async () => {
    const t0 = now();
    return host.withSnapLock(snapshot.snapshot_id, async () => {
      const meta = await snapMeta(host.layout, snapshot);
      if (spec.disk_mib < meta.disk_mib) throw new HostdError("bad_request", "disk_mib cannot shrink");
      const sdir = host.layout.snapDir(meta.snapshot_id);
      const { vm } = await bringUp(host, {
        spec,
        start: { base: baseOf(meta), boot: { restore: join(sdir, "state") } },
        files: async (p, undo) => {
          for (const f of ["ram", "disk.qcow2"]) {
            await rename(join(sdir, f), join(p.dir, f));
            // Give the snapshot its files back if the resume fails, so it can be resumed again.
            undo.push(() => rename(join(p.dir, f), join(sdir, f)));
          }
        },
        agentMs: TIMEOUTS.restoreAgentMs,
        // A `start_paused` fork gets its own identity on first run; otherwise it is the same sandbox and
        // only the clock and the RNG moved on while it was paused.
        identity: meta.needs_configure ? "configure" : "sync",
        grow: () => spec.disk_mib > meta.disk_mib,
        register: true,
      });
      await rm(sdir, { recursive: true, force: true });
      const rt = runtimeOf(spec, vm.rec, t0, "resume");
      host.log.info("VM resumed", { sandbox_id: spec.sandbox_id, spawn_ms: rt.spawn_ms });
      return rt;
    });
  });
}
