/**
 * The real thing: build the kernel and debian:12 (cached after the first run, which takes 10–25 minutes
 * on 2 shared cores), then boot them under QEMU microvm the way the engine does and read the serial console.
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
  /** ms from spawning QEMU to the first console output matching `marker`, if it came. */
  markerMs?: number;
  exitCode: number | null;
}

interface BootOptions {
  /** Stop `settleMs` after this appears on the console. */
  marker: RegExp;
  /** Lines for a shell on the console: sent once `echo READY-$((1+1))` has been answered. */
  shell?: string[];
  timeoutMs?: number;
  settleMs?: number;
}

/**
 * Boots `img` under QEMU microvm the way the engine does (virtio-mmio disk, NIC, serial port, rng), reading
 * the serial console. With `shell`, PID 1 is expected to be a shell reading the console: the test types
 * into it (init arguments are impossible, see kernelCmdline).
 */
function boot(img: ImagePaths, append: string, o: BootOptions): Promise<Boot> {
  const dir = mkdtempSync(join(tmpdir(), "csb-boot-"));
  const args = [
    // acpi=off: only then does QEMU append virtio_mmio.device= entries to the command line
    ...["-M", "microvm,acpi=off,x-option-roms=off,isa-serial=on,rtc=on"],
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
    const q = spawn("qemu-system-x86_64", args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let markerMs: number | undefined;
    let shellUp = false;
    const timers: NodeJS.Timeout[] = [];
    const stop = () => q.kill("SIGKILL");
    timers.push(setTimeout(stop, o.timeoutMs ?? 60_000));
    if (o.shell) {
      // typed-ahead input is lost until the shell has the console open: poll until it answers
      timers.push(
        setInterval(() => {
          if (!shellUp) q.stdin.write("echo READY-$((1+1))\n");
        }, 100),
      );
    }
    q.stdout.on("data", (b: Buffer) => {
      out += b.toString("utf8");
      if (o.shell && !shellUp && /READY-2/.test(out)) {
        shellUp = true;
        q.stdin.write(`${o.shell.join("\n")}\n`);
      }
      if (markerMs === undefined && o.marker.test(out)) {
        markerMs = Date.now() - t0;
        timers.push(setTimeout(stop, o.settleMs ?? 1000));
      }
    });
    q.stderr.on("data", (b: Buffer) => {
      out += b.toString("utf8");
    });
    q.stdin.on("error", () => {}); // QEMU gone before we finished typing
    q.on("error", reject);
    q.on("close", (code) => {
      for (const t of timers) clearTimeout(t);
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
  let lastPct = -10;
  img = await ensureImage("debian:12", (p) => {
    const pct = p.fraction === undefined ? undefined : Math.round(p.fraction * 100);
    if (p.phase === "kernel:compile" && pct !== undefined && pct - lastPct < 10) return;
    if (pct !== undefined) lastPct = pct;
    process.stderr.write(`${p.phase} ${pct ?? ""} ${p.message ?? ""}\n`);
  });
  process.stderr.write(`debian:12 ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
});

after(() => {
  if (fakeAgentDir) {
    rmSync(fakeAgentDir, { recursive: true, force: true });
    Reflect.deleteProperty(process.env, "CREATEOS_SANDBOX_AGENT_SRC");
  }
});

test("the image is a sparse ext4 of at least 1 GiB", () => {
  const st = statSync(img.rootfs);
  assert.ok(st.size >= 1024 * 1048576, "at least 1 GiB");
  assert.ok(st.blocks * 512 < st.size, "sparse");
  assert.match(img.hash, /^[0-9a-f]{16}$/);
});

test(
  "debian:12 boots: the kernel mounts the rootfs, devices and ip= are there",
  { timeout: 120_000 },
  async () => {
    // markers are computed by the shell so the echo of the typed command cannot match them
    const script = [
      "mount -t proc proc /proc; mount -t sysfs sys /sys",
      "echo HOST-$(cat /etc/hostname)-$((1+1))",
      "cat /etc/resolv.conf /etc/os-release",
      "echo MACHINE-ID-BYTES-$(wc -c < /etc/machine-id)",
      "test -x /usr/local/sbin/createos-agent && echo AGENT-INSTALLED-$((1+1))",
      "echo PORT-$(cat /sys/class/virtio-ports/*/name)",
      "ip -4 -o addr show dev eth0",
      "echo ROOT-$(stat -f -c %T /)",
      `python3 -c 'print("PY-%d" % (6*7))'`,
      "curl --version | head -1",
      "ping -V",
      "ps --version",
      "echo END-$((6*7))",
    ];
    const append = kernelCmdline({ hostKhz: hostKhz(), init: "/bin/sh" });
    const b = await boot(img, append, { marker: /END-42/, shell: script });
    const c = b.console;
    assert.ok(b.markerMs !== undefined, `no end marker on the console:\n${c}`);
    assert.match(c, /HOST-sandbox-2/);
    assert.match(c, /nameserver 169\.254\.0\.22/);
    assert.match(c, /Debian GNU\/Linux 12 \(bookworm\)/);
    assert.match(c, /MACHINE-ID-BYTES-0/);
    assert.match(c, /AGENT-INSTALLED-2/);
    assert.match(c, /PORT-org\.createos\.agent/);
    assert.match(c, /inet 169\.254\.0\.21\/30/);
    assert.match(c, /ROOT-ext2\/ext3/);
    assert.match(c, /PY-42/);
    assert.match(c, /curl 7\./);
    assert.match(c, /ping from iputils/);
    assert.match(c, /ps from procps-ng/);
  },
);

test("boot to a shell on PID 1 is fast under TCG", { timeout: 120_000 }, async () => {
  const append = kernelCmdline({ hostKhz: hostKhz(), init: "/bin/sh" });
  const b = await boot(img, append, { marker: /READY-2/, shell: ["exit"] });
  assert.ok(b.markerMs !== undefined, `the shell never answered:\n${b.console}`);
  process.stderr.write(`QEMU start → shell on PID 1 answering on the console: ${b.markerMs} ms\n`);
  // the goal is < 2 s on an idle host; the bound is loose because CI shares its cores
  assert.ok(b.markerMs < 10_000, `boot took ${b.markerMs} ms`);
});

test("the image's own init (the agent) starts as PID 1", { timeout: 120_000 }, async () => {
  const append = kernelCmdline({ hostKhz: hostKhz(), verbose: true });
  if (realAgent) {
    const b = await boot(img, append, {
      marker: /Run \/usr\/local\/sbin\/createos-agent as init process/,
      settleMs: 5000,
    });
    assert.ok(b.markerMs !== undefined, `the kernel did not start the agent:\n${b.console}`);
    assert.doesNotMatch(b.console, /Kernel panic/, "the agent must not exit");
  } else {
    const b = await boot(img, append, { marker: /CREATEOS-TEST-INIT pid=1/ });
    assert.ok(b.markerMs !== undefined, `the stand-in agent did not run as PID 1:\n${b.console}`);
  }
});

/** What each catalog image promises, checked inside the booted guest. */
const PROMISES: Record<string, { cmd: string; expect: RegExp }[]> = {
  "devbox:1": [
    { cmd: "node -e 'console.log(\"NODE-\" + 6*7)'", expect: /NODE-42/ },
    { cmd: "node --version | sed 's/^/NODEV-/'", expect: /NODEV-v24\./ },
    { cmd: "bun --version | sed 's/^/BUN-/'", expect: /BUN-1\.\d+/ },
    { cmd: "npm --version | sed 's/^/NPM-/'", expect: /NPM-\d+\.\d+/ },
    { cmd: "python3 -c 'print(\"PY-%d\" % (6*7))'", expect: /PY-42/ },
    { cmd: "pip3 --version | sed 's/^/PIP-/'", expect: /PIP-pip \d+/ },
    { cmd: "git --version", expect: /git version 2\./ },
    { cmd: "gcc --version | head -1", expect: /gcc .*12\./ },
    { cmd: "make --version | head -1", expect: /GNU Make/ },
    { cmd: "rg --version | head -1", expect: /ripgrep \d+/ },
    { cmd: "echo '{\"a\":42}' | jq .a | sed 's/^/JQ-/'", expect: /JQ-42/ },
    { cmd: "s3fs --version | head -1", expect: /Amazon Simple Storage Service File System V1\./ },
    { cmd: "test -x /usr/sbin/sshd && echo SSHD-$((1+1))", expect: /SSHD-2/ },
    { cmd: "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l | sed 's/^/HOSTKEYS-/'", expect: /HOSTKEYS-0/ },
    { cmd: "curl --version | head -1", expect: /curl \d+/ },
  ],
  "nodeops/sandbox:debian": [
    { cmd: "apt-get --version | head -1", expect: /apt \d+/ },
    { cmd: "ls /var/lib/apt/lists | grep -c _Packages | sed 's/^/LISTS-/'", expect: /LISTS-0/ },
    { cmd: "grep -h ^deb /etc/apt/sources.list | head -1", expect: /deb http\S*debian\S* bookworm main/ },
    { cmd: "sudo --version | head -1", expect: /Sudo version/ },
    { cmd: "gpg --version | head -1", expect: /gpg \(GnuPG\)/ },
    { cmd: "git --version", expect: /git version 2\./ },
    { cmd: "python3 -c 'print(\"PY-%d\" % (6*7))'", expect: /PY-42/ },
  ],
};

for (const [name, promises] of Object.entries(PROMISES)) {
  test(
    `${name} has what its description promises`,
    // Builds the image when it is missing (mmdebstrap: minutes on a fresh machine); never skipped.
    { timeout: 45 * 60_000 },
    async () => {
      const built = await ensureImage(name);
      const shell = [
        "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp",
        "export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ...promises.map((p) => p.cmd),
        "echo END-$((6*7))",
      ];
      const b = await boot(built, kernelCmdline({ hostKhz: hostKhz(), init: "/bin/sh" }), {
        marker: /END-42/,
        shell,
        timeoutMs: 240_000,
      });
      assert.ok(b.markerMs !== undefined, `${name}: no end marker:\n${b.console}`);
      for (const p of promises) assert.match(b.console, p.expect, `${name}: ${p.cmd}`);
    },
  );
}
