/**
 * `createos-sandbox doctor`: what this host has, what is missing or unusable, in plain words. Every
 * check is a real probe (run the tool, create and delete a namespace), nothing is guessed from paths alone.
 */
import { constants, existsSync, readFileSync } from "node:fs";
import { access, statfs } from "node:fs/promises";
import { dirname } from "node:path";
import { builtImage, cacheDir, catalog } from "./images/index.js";
import { guestNetChecks } from "./net/dnscheck.js";
import { CGROUP_ROOT, Cgroups } from "./sys/cgroup.js";
import { runRaw, which } from "./sys/index.js";
import { jailChecks } from "./vmm/jailcheck.js";

export interface DoctorCheck {
  check: string;
  ok: boolean;
  detail: string;
}

const MIN_FREE_BYTES = 5 * 1024 ** 3;

function firstLine(s: string): string {
  return s.trim().split("\n")[0] ?? "";
}

async function toolVersion(check: string, cmd: string, args: string[], pkg: string): Promise<DoctorCheck> {
  const path = which(cmd);
  if (!path) return { check, ok: false, detail: `${cmd} is not installed (Debian package ${pkg})` };
  const r = await runRaw(path, args, { timeoutMs: 10_000 });
  if (r.code !== 0)
    return { check, ok: false, detail: `${cmd} is installed but failed: ${firstLine(r.stderr)}` };
  return { check, ok: true, detail: firstLine(r.stdout || r.stderr) };
}

/**
 * Said wherever VMs would run under TCG: the jail and the cgroup hold a QEMU that goes wrong, but under
 * emulation every guest instruction runs through QEMU's translator on the host, so a QEMU bug a guest can
 * reach is closer to the host than a hardware-virtualised guest ever is.
 */
const TCG_WARNING =
  "under TCG a QEMU bug that a guest can trigger is a bug on the host: run hosts shared by several tenants with KVM";

async function kvmCheck(): Promise<DoctorCheck> {
  const c = await kvmCheckBare();
  return c.ok ? c : { ...c, detail: `${c.detail}. ${TCG_WARNING}` };
}

async function kvmCheckBare(): Promise<DoctorCheck> {
  const check = "kvm";
  const flags = /^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.split(/\s+/) ?? [];
  const hw = flags.includes("vmx") ? "vmx" : flags.includes("svm") ? "svm" : undefined;
  const pvm = existsSync("/sys/module/kvm_pvm");
  if (!existsSync("/dev/kvm")) {
    return {
      check,
      ok: false,
      detail: "/dev/kvm does not exist: VMs run under QEMU's software emulator (TCG), slower",
    };
  }
  try {
    await access("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return { check, ok: false, detail: "/dev/kvm exists but this user cannot open it: VMs will use TCG" };
  }
  if (!hw) {
    return {
      check,
      ok: false,
      detail:
        `/dev/kvm exists but the CPU shows no vmx/svm flag${pvm ? " (a PVM host: only PVM guests boot)" : ""}; ` +
        "the engine's boot probe decides, most likely TCG (software emulation, slower)",
    };
  }
  return {
    check,
    ok: true,
    detail: `/dev/kvm usable, CPU has ${hw}; the engine's boot probe confirms at start`,
  };
}

async function netCheck(): Promise<DoctorCheck[]> {
  const ip = which("ip");
  const out: DoctorCheck[] = [];
  if (!ip) return [{ check: "netns", ok: false, detail: "ip is not installed (Debian package iproute2)" }];
  const tag = `csbdoc${process.pid % 100000}`;
  const add = await runRaw(ip, ["netns", "add", tag], { timeoutMs: 10_000 });
  if (add.code === 0) {
    await runRaw(ip, ["netns", "del", tag], { timeoutMs: 10_000 });
    out.push({ check: "netns", ok: true, detail: "can create and delete network namespaces" });
  } else {
    out.push({
      check: "netns",
      ok: false,
      detail: `cannot create network namespaces: ${firstLine(add.stderr)} (run as root)`,
    });
  }
  const tap = await runRaw(ip, ["tuntap", "add", "dev", tag, "mode", "tap"], { timeoutMs: 10_000 });
  if (tap.code === 0) {
    await runRaw(ip, ["link", "del", tag], { timeoutMs: 10_000 });
    out.push({ check: "tap", ok: true, detail: "can create and delete TAP devices" });
  } else {
    out.push({ check: "tap", ok: false, detail: `cannot create TAP devices: ${firstLine(tap.stderr)}` });
  }
  const nft = which("nft");
  if (!nft) {
    out.push({ check: "nftables", ok: false, detail: "nft is not installed (Debian package nftables)" });
  } else {
    const r = await runRaw(nft, ["list", "tables"], { timeoutMs: 10_000 });
    out.push(
      r.code === 0
        ? { check: "nftables", ok: true, detail: "nft can read the ruleset" }
        : { check: "nftables", ok: false, detail: `nft cannot read the ruleset: ${firstLine(r.stderr)}` },
    );
  }
  return out;
}

async function diskCheck(): Promise<DoctorCheck> {
  let dir = cacheDir();
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  const st = await statfs(dir);
  const free = st.bavail * st.bsize;
  const gib = (free / 1024 ** 3).toFixed(1);
  return free < MIN_FREE_BYTES
    ? {
        check: "disk",
        ok: false,
        detail: `only ${gib} GiB free for ${cacheDir()}: images and snapshots need 5 GiB or more`,
      }
    : { check: "disk", ok: true, detail: `${gib} GiB free for ${cacheDir()}` };
}

/**
 * Whether forks can clone their parent's RAM (snapshot/store.ts): a data dir on a filesystem without
 * reflinks gets a loop-mounted XFS image, which needs mkfs.xfs and loop devices; without them forks copy.
 */
export function snapshotStoreCheck(env: NodeJS.ProcessEnv = process.env): DoctorCheck {
  const check = "snapshot store";
  const mode = env.CREATEOS_SANDBOX_SNAPSHOT_FS || "auto";
  if (mode === "plain")
    return {
      check,
      ok: true,
      detail: "plain (CREATEOS_SANDBOX_SNAPSHOT_FS): forks clone only on a reflink filesystem",
    };
  const missing = [
    which("mkfs.xfs") ? "" : "mkfs.xfs (Debian package xfsprogs)",
    existsSync("/dev/loop-control") ? "" : "/dev/loop-control (loop devices)",
  ].filter(Boolean);
  return missing.length
    ? {
        check,
        ok: false,
        detail: `no ${missing.join(", ")}: on a data dir without reflinks forks copy their parent's RAM`,
      }
    : {
        check,
        ok: true,
        detail: `${mode}: a data dir without reflinks gets an XFS image (hostd.xfs); forks clone RAM`,
      };
}

/** The mode the engine will use, its controllers, and a real create/limit/remove of a probe cgroup. */
export async function cgroupCheck(root = CGROUP_ROOT): Promise<DoctorCheck> {
  const check = "cgroups";
  const cg = Cgroups.detect(root, "createos-sandbox/doctor");
  if (!cg.available)
    return {
      check,
      ok: false,
      detail: `no usable cgroups under ${root} (neither v2 with cpu, memory and pids nor those v1 controllers): VMs would run without CPU, memory and pids limits`,
    };
  const where = cg.mode === "v1" ? `${root}/<controller>` : root;
  const what = `${cg.mode} (${cg.controllers.join(", ")} under ${where})`;
  const err = await cg.probe();
  if (err) return { check, ok: false, detail: `${what}, but a VM cgroup cannot be set up: ${err}` };
  const io = cg.controllers.includes(cg.mode === "v1" ? "blkio" : "io")
    ? ""
    : "; no I/O controller: no I/O weight";
  return {
    check,
    ok: true,
    detail: `${what}: each VM gets its own cgroup with CPU, memory and pids limits${io}`,
  };
}

function imageChecks(): DoctorCheck[] {
  return catalog().map((c) => {
    const b = builtImage(c.name);
    return b
      ? { check: `image ${c.name}`, ok: true, detail: `built: ${b.rootfs}` }
      : {
          check: `image ${c.name}`,
          ok: false,
          detail: "not built yet: built on first use, or now with `createos-sandbox images build`",
        };
  });
}

export async function doctor(): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  checks.push(await toolVersion("qemu", "qemu-system-x86_64", ["--version"], "qemu-system-x86"));
  checks.push(await kvmCheck());
  checks.push(...(await netCheck()));
  checks.push(...(await guestNetChecks()));
  checks.push(await toolVersion("go", "go", ["version"], "golang-go"));
  checks.push(await toolVersion("mmdebstrap", "mmdebstrap", ["--version"], "mmdebstrap"));
  checks.push(await toolVersion("mkfs.ext4", "mkfs.ext4", ["-V"], "e2fsprogs"));
  const src = "/usr/src/linux-source-6.1.tar.xz";
  checks.push(
    existsSync(src)
      ? { check: "kernel source", ok: true, detail: src }
      : { check: "kernel source", ok: false, detail: `${src} is missing (Debian package linux-source-6.1)` },
  );
  const missingBuildTools = ["make", "gcc", "flex", "bison", "bc"].filter((t) => !which(t));
  checks.push(
    missingBuildTools.length === 0
      ? { check: "kernel build tools", ok: true, detail: "make, gcc, flex, bison, bc present" }
      : {
          check: "kernel build tools",
          ok: false,
          detail: `missing ${missingBuildTools.join(", ")} (Debian packages build-essential flex bison bc libelf-dev libssl-dev)`,
        },
  );
  checks.push(
    process.getuid?.() === 0
      ? { check: "root", ok: true, detail: "running as root (needed for rootfs builds, TAP and namespaces)" }
      : {
          check: "root",
          ok: false,
          detail: "not running as root: rootfs builds, TAP devices and namespaces need it",
        },
  );
  checks.push(await cgroupCheck());
  checks.push(await diskCheck());
  checks.push(snapshotStoreCheck());
  checks.push(...(await jailChecks(cacheDir())));
  checks.push(...imageChecks());
  return checks;
}
