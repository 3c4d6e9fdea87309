/**
 * Re-adoption's choice, without VMs: records planted in a data dir before a daemon opens it, a VMM driver
 * that adopts whatever it is asked to and records it. The daemon is real (records, slots, cgroups).
 *   node --test packages/hostd/dist/readopt.test.js
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { LocalHostDaemon } from "./daemon.js";
import type { VmRecord } from "./records.js";
import { tempDataDir } from "./testutil.js";
import type { Machine, MachineConfig, VmmDriver } from "./vmm/driver.js";

/** Adopts every pid it is given (a paused machine whose agent never answers) and says which dirs. */
class AdoptingDriver implements VmmDriver {
  readonly name = "adopting";
  readonly adopted: string[] = [];
  readonly resumed: string[] = [];

  async probeAccel(): Promise<"tcg"> {
    return "tcg";
  }

  configure(): Machine {
    throw new Error("fake driver: nothing is started here");
  }

  async adopt(config: MachineConfig, pid: number): Promise<Machine> {
    this.adopted.push(config.dir);
    const no = async () => {
      throw new Error("fake machine: not supported");
    };
    return {
      config,
      // no agent listens there: the re-adoption gives up after adopting, and cleans the VM
      paths: { qmp: "", agent: join(config.dir, "no-agent.sock"), console: "", pidfile: "" },
      state: "paused",
      pid,
      start: no,
      restore: no,
      resume: async () => {
        this.resumed.push(config.dir);
      },
      pause: no,
      snapshot: no,
      stop: async () => undefined,
      resizeDisk: no,
      detach() {},
      exited: new Promise<string>(() => {}),
    } as unknown as Machine;
  }
}

const dataDir = tempDataDir("readopt");
const sleepers: ChildProcess[] = [];
after(() => {
  for (const p of sleepers) p.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

/** A VM dir as a running VM leaves it, its pidfile naming a live process (not a QEMU: nothing kills it). */
function plantVm(id: string, slot: number, withDisk: boolean): string {
  const dir = join(dataDir, "hostd", "vms", id);
  mkdirSync(dir, { recursive: true });
  const sleeper = spawn("sleep", ["120"], { stdio: "ignore" });
  sleepers.push(sleeper);
  writeFileSync(join(dir, "qemu.pid"), String(sleeper.pid));
  if (withDisk) writeFileSync(join(dir, "disk.qcow2"), "");
  const rec: VmRecord = {
    sandbox_id: id,
    hostname: id,
    slot,
    ip: "10.201.15.200",
    disk_mib: 64,
    created_at: new Date().toISOString(),
    state: "running",
    image: "debian:12",
    image_hash: "h",
    vcpu: 1,
    mem_mib: 128,
    kernel: "/nonexistent/vmlinux",
    cmdline: "",
    accel: "tcg",
    tb_size_mib: 32,
    chain: [],
  };
  writeFileSync(join(dir, "vm.json"), JSON.stringify(rec));
  return dir;
}

test("a VM whose disk left its dir (a pause that died after the move) is not re-adopted, nor resumed", async () => {
  const moved = plantVm("readopt-moved", 4000, false);
  const intact = plantVm("readopt-intact", 4001, true);
  const driver = new AdoptingDriver();
  const d = await LocalHostDaemon.open({
    dataDir,
    cacheDir: join(dataDir, "cache"),
    driver,
    warmPool: 0,
    netPool: 0,
  });
  try {
    assert.deepEqual(driver.adopted, [intact], "only the VM with its disk is taken back");
    assert.ok(!driver.resumed.includes(moved), "a QEMU whose files are a snapshot's now is never resumed");
    assert.deepEqual(await d.list(), [], "neither answered: both were cleaned");
  } finally {
    await d.close();
  }
});
