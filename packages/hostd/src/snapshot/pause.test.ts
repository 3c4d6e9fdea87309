/**
 * A pause that fails after the agent was told to quiesce leaves the guest as it was: vCPUs running and
 * the agent thawed (a quiesced agent sends nothing more: exec output, files and ptys would stall). The
 * pause is real; the guest (QEMU and its agent) is a fake that fails where told.
 *   node --test packages/hostd/dist/snapshot/pause.test.js
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import type { Host } from "../host.js";
import { Layout } from "../records.js";
import { Mutex, SingleFlight } from "../sys/fs.js";
import { tempDataDir } from "../testutil.js";
import { pause, pauseHooks } from "./pause.js";

const dataDir = tempDataDir("pause");
after(() => rm(dataDir, { recursive: true, force: true }));

type Fail = "quiesce" | "stop" | "snapshot" | "none";

async function setup(fail: Fail, agentHasThaw = true) {
  const layout = new Layout(join(dataDir, fail + String(agentHasThaw)), join(dataDir, "cache"));
  for (const d of [layout.vms, layout.snaps]) await mkdir(d, { recursive: true });
  const dir = layout.vmDir("sb1");
  await mkdir(dir);
  await writeFile(join(dir, "ram"), "ram");
  await writeFile(join(dir, "disk.qcow2"), "disk");
  const calls: string[] = [];
  let state = "running";
  const agent = {
    async quiesce() {
      calls.push("quiesce");
      // The guest got it and quiesced; its reply never came.
      if (fail === "quiesce") throw new Error("agent rpc quiesce timed out");
    },
    async thaw() {
      calls.push("thaw");
      if (!agentHasThaw) throw new Error("unknown method thaw");
    },
    async hello() {
      calls.push("hello");
    },
    close() {},
  };
  const machine = {
    get state() {
      return state;
    },
    async pause() {
      calls.push("stop");
      if (fail === "stop") throw new Error("QMP stop failed");
      state = "paused";
    },
    async resume() {
      calls.push("cont");
      state = "running";
    },
    async snapshot(path: string) {
      calls.push("snapshot");
      if (fail !== "none") throw new Error("migration failed");
      await writeFile(path, "state");
    },
    async stop() {
      calls.push("quit");
      state = "stopped";
    },
  };
  const vm = {
    rec: {
      sandbox_id: "sb1",
      hostname: "h",
      image: "i",
      image_hash: "h",
      vcpu: 1,
      mem_mib: 128,
      kernel: "k",
      cmdline: "",
      accel: "tcg",
      tb_size_mib: 32,
      chain: [],
      disk_mib: 64,
    },
    dir,
    gone: false,
    agent,
    machine,
    lock: Promise.resolve(),
  };
  await writeFile(join(dir, "vm.json"), JSON.stringify({ ...vm.rec, slot: 7, ip: "", created_at: "" }));
  const vms = new Map([["sb1", vm]]);
  const host = {
    layout,
    vms,
    log: { warn: (m: string) => calls.push(`warn: ${m}`), info() {} },
    async killStale() {},
    async cleanupVmFiles(_rec: unknown, d: string) {
      calls.push("cleanup");
      await rm(d, { recursive: true, force: true });
    },
    background(fn: () => Promise<void>) {
      void fn().catch(() => undefined);
    },
    async removeCgroup() {},
    async releaseSlot() {
      calls.push("release slot");
    },
    ops: new SingleFlight(),
    layerLock: new Mutex(),
    async checkDiskReserve() {},
    withSnapLock<T>(_id: string, fn: () => Promise<T>) {
      return fn();
    },
    withVmLock<T>(_vm: unknown, fn: () => Promise<T>) {
      return fn();
    },
    getVm: (id: string) => vms.get(id),
  };
  return { host: host as unknown as Host, calls, layout, vms, machine };
}

for (const [fail, expected] of [
  ["quiesce", ["quiesce", "thaw"]],
  ["stop", ["quiesce", "stop", "thaw"]],
  ["snapshot", ["quiesce", "stop", "snapshot", "cont", "thaw"]],
] as const) {
  test(`a pause whose ${fail} fails thaws the agent and leaves the guest running`, async () => {
    const { host, calls, layout, vms, machine } = await setup(fail);
    await assert.rejects(pause(host, "sb1", "snap-1"), /timed out|QMP stop failed|migration failed/);
    assert.deepEqual(calls, expected);
    assert.equal(machine.state, "running");
    assert.ok(vms.has("sb1"), "the VM runs on");
    assert.ok(!existsSync(layout.snapDir("snap-1")), "no snapshot dir is left");
  });
}

test("an agent from before thaw gets a new session instead", async () => {
  const { host, calls } = await setup("stop", false);
  await assert.rejects(pause(host, "sb1", "snap-1"), /QMP stop failed/);
  assert.deepEqual(calls, ["quiesce", "stop", "thaw", "hello"]);
});

test("a pause failing after its state was saved still completes the snapshot and frees the VM", async () => {
  const { host, calls, layout, vms } = await setup("none");
  pauseHooks.afterMove = () => {
    pauseHooks.afterMove = undefined;
    throw new Error("ENOSPC: no space left on device, write");
  };
  try {
    const ref = await pause(host, "sb1", "snap-1");
    assert.equal(ref.snapshot_id, "snap-1");
  } finally {
    pauseHooks.afterMove = undefined;
  }
  const meta = JSON.parse(await readFile(join(layout.snapDir("snap-1"), "meta.json"), "utf8"));
  assert.equal(meta.state, "complete");
  for (const f of ["ram", "disk.qcow2", "state"]) assert.ok(existsSync(join(layout.snapDir("snap-1"), f)), f);
  assert.ok(calls.includes("cleanup"), `the VM's slot, cgroup and dir are freed: ${calls.join(", ")}`);
  assert.ok(!existsSync(layout.vmDir("sb1")));
  assert.ok(!vms.has("sb1"));
  // and a repeat of the pause answers the same snapshot
  assert.equal((await pause(host, "sb1", "snap-1")).snapshot_id, "snap-1");
});
