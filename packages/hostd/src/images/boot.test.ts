/**
 * The real thing: build the kernel and debian:12 (cached after the first run, which takes ~10 minutes
 * on 2 cores), then boot them under QEMU microvm the way the engine does and read the serial console.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type ImagePaths, ensureImage, hostKhz, kernelCmdline } from "./index.js";
import { agentSourceDir } from "./util.js";

interface Boot {
  console: string;
  /** ms from spawning QEMU to the first console line matching the marker, if it came. */
  markerMs?: number;
  exitCode: number | null;
}

/** Boots `img` with `append`, until QEMU exits or `timeoutMs`; stops early `settleMs` after the marker. */
function boot(
  img: ImagePaths,
  append: string,
  marker: RegExp,
  timeoutMs = 60_000,
  settleMs = 1500,
): Promise<Boot> {
  const dir = mkdtempSync(join(tmpdir(), "csb-boot-"));
  const args = [
    ...["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on"],
    ...["-accel", "tcg,tb-size=64", "-cpu", "max", "-m", "256", "-smp", "1"],
    ...["-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot"],
    ...["-kernel", img.kernel, "-append", append],
    // snapshot=on: the guest writes to a throwaway overlay, never to the cached image
    ...["-drive", `id=root,file=${img.rootfs},format=raw,if=none,snapshot=on`],
    ...["-device", "virtio-blk-device,drive=root"],
    // a NIC with no peer: enough for the kernel's ip= to configure eth0
    ...["-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-device,netdev=n0,mac=02:fc:00:00:00:01"],
    ...["-device", "virtio-serial-device"],
    ...["-chardev", `socket,id=agent,path=${join(dir, "agent.sock")},server=on,wait=off`],
    ...["-device", "virtserialport,chardev=agent,name=org.createos.agent"],
    ...["-device", "virtio-rng-device"],
  ];
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const q = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let markerMs: number | undefined;
    let settle: NodeJS.Timeout | undefined;
    const kill = setTimeout(() => q.kill("SIGKILL"), timeoutMs);
    q.stdout.on("data", (b: Buffer) => {
      out += b.toString("utf8");
      if (markerMs === undefined && marker.test(out)) {
        markerMs = Date.now() - t0;
        settle = setTimeout(() => q.kill("SIGKILL"), settleMs);
      }
    });
    q.stderr.on("data", (b: Buffer) => {
      out += b.toString("utf8");
    });
    q.on("error", reject);
    q.on("close", (code) => {
      clearTimeout(kill);
      if (settle) clearTimeout(settle);
      rmSync(dir, { recursive: true, force: true });
      resolve({ console: out.replace(/\r/g, ""), markerMs, exitCode: code });
    });
  });
}

let img: ImagePaths;
let fakeAgentDir: string | undefined;
const realAgent = existsSync(join(agentSourceDir(), "cmd", "createos-agent"));

before(async () => {
  if (!realAgent) {
    // until packages/agent has its main package, a stand-in PID 1 proves the image's init path works
    fakeAgentDir = mkdtempSync(join(tmpdir(), "csb-fake-agent-"));
    await mkdir(join(fakeAgentDir, "cmd", "createos-agent"), { recursive: true });
    writeFileSync(join(fakeAgentDir, "go.mod"), "module example.com/fakeagent\n\ngo 1.19\n");
    writeFileSync(
      join(fakeAgentDir, "cmd", "createos-agent", "main.go"),
      [
        "package main",
        'import ("fmt"; "os"; "syscall")',
        "func main() {",
        '\tfmt.Printf("CREATEOS-TEST-INIT pid=%d\\n", os.Getpid())',
        "\tif os.Getpid() == 1 { syscall.Sync(); syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART) }",
        "}",
        "",
      ].join("\n"),
    );
    process.env.CREATEOS_SANDBOX_AGENT_SRC = fakeAgentDir;
  }
  const t0 = Date.now();
  img = await ensureImage("debian:12", (p) => {
    if (p.phase !== "kernel:compile" || (p.fraction ?? 0) * 50 - Math.floor((p.fraction ?? 0) * 50) < 0.1) {
      process.stderr.write(
        `# ${p.phase} ${p.fraction === undefined ? "" : Math.round(p.fraction * 100)} ${p.message ?? ""}\n`,
      );
    }
  });
  process.stderr.write(`# debian:12 ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
});

after(() => {
  if (fakeAgentDir) {
    rmSync(fakeAgentDir, { recursive: true, force: true });
    Reflect.deleteProperty(process.env, "CREATEOS_SANDBOX_AGENT_SRC");
  }
});

test("the image has the files every sandbox relies on and an ext4 with headroom", () => {
  const st = statSync(img.rootfs);
  assert.ok(st.size >= 1024 * 1048576, "at least 1 GiB");
  assert.ok(st.blocks * 512 < st.size, "sparse");
  assert.match(img.hash, /^[0-9a-f]{16}$/);
});

test(
  "debian:12 boots: the kernel mounts the rootfs, devices and ip= are there",
  { timeout: 120_000 },
  async () => {
    const script = [
      "mount -t proc proc /proc",
      "mount -t sysfs sys /sys",
      "echo BOOT-MARK host=$(cat /etc/hostname)",
      "cat /etc/resolv.conf /etc/os-release",
      "echo machine-id-bytes=$(wc -c < /etc/machine-id)",
      "test -x /usr/local/sbin/createos-agent && echo AGENT-INSTALLED",
      "cat /sys/class/virtio-ports/*/name",
      "ip -4 -o addr show dev eth0",
      "grep -c processor /proc/cpuinfo",
      "echo BOOT-END",
    ].join("; ");
    const append = kernelCmdline({ hostKhz: hostKhz(), init: "/bin/sh", initArgs: ["-c", script] });
    const b = await boot(img, append, /BOOT-END/);
    const c = b.console;
    assert.ok(b.markerMs !== undefined, `no end marker on the console:\n${c}`);
    assert.match(c, /BOOT-MARK host=sandbox/);
    assert.match(c, /nameserver 169\.254\.0\.22/);
    assert.match(c, /Debian GNU\/Linux 12 \(bookworm\)/);
    assert.match(c, /machine-id-bytes=0/);
    assert.match(c, /AGENT-INSTALLED/);
    assert.match(c, /org\.createos\.agent/);
    assert.match(c, /inet 169\.254\.0\.21\/30/);
    const first = /BOOT-MARK/.exec(c);
    process.stderr.write(`# boot to PID 1 output under TCG: ${b.markerMs} ms to the last marker\n`);
    assert.ok(first);
  },
);

test("the image's own init (the agent) starts as PID 1", { timeout: 120_000 }, async () => {
  const append = kernelCmdline({ hostKhz: hostKhz(), verbose: true });
  if (realAgent) {
    const b = await boot(img, append, /Run \/usr\/local\/sbin\/createos-agent as init process/, 60_000, 5000);
    assert.ok(b.markerMs !== undefined, `the kernel did not start the agent:\n${b.console}`);
    assert.doesNotMatch(b.console, /Kernel panic/, "the agent must not exit");
  } else {
    const b = await boot(img, append, /CREATEOS-TEST-INIT pid=1/);
    assert.ok(b.markerMs !== undefined, `the stand-in agent did not run as PID 1:\n${b.console}`);
    process.stderr.write(`# boot to PID 1 (stand-in agent, verbose console): ${b.markerMs} ms\n`);
  }
});
