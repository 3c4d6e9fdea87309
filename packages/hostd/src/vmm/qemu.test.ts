import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { MachineConfig } from "./driver.js";
import { machinePaths, qemuArgs } from "./qemu.js";

const config: MachineConfig = {
  dir: "/d",
  vcpu: 2,
  memMib: 512,
  kernel: "/k/vmlinux",
  cmdline: "console=ttyS0 quiet",
  ramPath: "/d/ram",
  diskPath: "/d/disk.qcow2",
  mac: "02:fc:00:00:00:01",
  accel: "tcg",
  jail: { uid: 200_001, gid: 200_001, cacheDir: "/c", diskRoots: [] },
};

// The exact argv, order included: microvm assigns virtio-mmio slots in command-line order, so a change
// here makes existing snapshots unrestorable (they need the same devices in the same slots).
test("qemuArgs: a TCG boot with a NIC, devices in their fixed order", () => {
  const argv = qemuArgs({ ...config, netns: "csb-1", tap: "tap0" }, machinePaths("/d"), { incoming: false });
  assert.deepEqual(argv, EXPECTED_BOOT);
});

test("qemuArgs: a KVM restore on a custom machine line waits paused for the incoming state", () => {
  const argv = qemuArgs({ ...config, accel: "kvm", machine: "microvm,acpi=off" }, machinePaths("/d"), {
    incoming: true,
  });
  assert.deepEqual(argv, EXPECTED_RESTORE);
});

/** Everything from the vCPU count to `-no-reboot`: the same for every machine. */
const DEVICES = [
  "-smp",
  "2",
  "-m",
  "512M",
  "-object",
  "memory-backend-file,id=mem,size=512M,mem-path=/d/ram,share=on",
  "-kernel",
  "/k/vmlinux",
  "-append",
  "console=ttyS0 quiet",
  "-drive",
  "file=/d/disk.qcow2,format=qcow2,if=none,id=root,cache=writeback,discard=unmap,aio=threads",
  "-device",
  "virtio-blk-device,drive=root",
  "-device",
  "virtio-serial-device,max_ports=2",
  "-chardev",
  "socket,id=agent,path=/d/run/agent.sock,server=on,wait=off",
  "-device",
  "virtserialport,chardev=agent,name=org.createos.agent",
  "-device",
  "virtio-rng-device",
  "-chardev",
  "file,id=con,path=/d/console.log,append=on",
  "-serial",
  "chardev:con",
  "-qmp",
  "unix:/d/run/qmp.sock,server=on,wait=off",
  "-no-reboot",
  "-sandbox",
  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

const EXPECTED_BOOT = [
  "-name",
  "createos,debug-threads=off",
  "-M",
  "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off,memory-backend=mem",
  "-nodefaults",
  "-no-user-config",
  "-nographic",
  "-accel",
  "tcg,tb-size=32",
  "-cpu",
  "max",
  ...DEVICES,
  "-netdev",
  "tap,id=n0,ifname=tap0,script=no,downscript=no",
  "-device",
  "virtio-net-device,netdev=n0,mac=02:fc:00:00:00:01",
];

const EXPECTED_RESTORE = [
  "-name",
  "createos,debug-threads=off",
  "-M",
  "microvm,acpi=off,memory-backend=mem",
  "-nodefaults",
  "-no-user-config",
  "-nographic",
  "-accel",
  "kvm",
  "-cpu",
  "host",
  ...DEVICES,
  "-S",
  "-incoming",
  "defer",
];

test("machinePaths: sockets in run/, but where a VM of the older layout made them (re-adoption)", () => {
  const d = mkdtempSync(join(tmpdir(), "qemu-paths-"));
  try {
    assert.equal(machinePaths(d).qmp, join(d, "run", "qmp.sock"), "a new VM");
    writeFileSync(join(d, "qmp.sock"), "");
    assert.equal(machinePaths(d).agent, join(d, "agent.sock"), "an older VM's dir, sockets in it");
    mkdirSync(join(d, "run"));
    assert.equal(machinePaths(d).agent, join(d, "run", "agent.sock"), "run/ wins once it exists");
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
