import { existsSync, readFileSync, readdirSync } from "node:fs";
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type Progress } from "@createos-sandbox/protocol";
import { GATEWAY_IP } from "../net/plan.js";
import { SingleFlight } from "../sys/fs.js";
import { NO_TIMEOUT, run, which } from "../sys/index.js";
import { DPKG_EXCLUDES, type Recipe, sanitiseName } from "./catalog.js";
import { type HostTrust, installTrust } from "./trust.js";
import { cacheDir, fmtMiB, rmrf, tempDirIn, withFileLock } from "./util.js";

export const AGENT_GUEST_PATH = "/usr/local/sbin/createos-agent";

export function imageDir(name: string): string {
  return join(cacheDir(), "rootfs", sanitiseName(name));
}

export function tarballPath(r: Recipe): string {
  return join(imageDir(r.name), `${r.treeHash}.tar`);
}

/**
 * Named by what went in: the Debian tree, the layer (when the recipe has one), the agent and (when the host
 * has extra CAs) those CAs. The tree's and the layer's ids lead their segments, which is how the cache cap
 * ties each tarball to the rootfs files built from it.
 */
export function ext4Path(r: Recipe, agentHash: string, trust: HostTrust): string {
  const layer = r.layerHash ? `-${r.layerHash}` : "";
  const ca = trust.hash ? `-ca${trust.hash}` : "";
  return join(imageDir(r.name), `${r.treeHash}${layer}-${agentHash}${ca}.ext4`);
}

/**
 * The Debian archive entries apt on this host uses for `suite` (`suite`, `suite-updates`,
 * `suite-security`), as one-line `deb` sources for mmdebstrap. Other repositories configured on the
 * host (vendor repos) are left out: images come from Debian only.
 */
export function debianMirrors(suite: string): string[] {
  const override = process.env.CREATEOS_SANDBOX_MIRROR;
  if (override) return [`deb ${override} ${suite} main`];
  const entries: { uri: string; suites: string[]; components: string[] }[] = [];
  const files: string[] = [];
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list");
  try {
    for (const f of readdirSync("/etc/apt/sources.list.d").sort()) {
      if (f.endsWith(".list") || f.endsWith(".sources")) files.push(join("/etc/apt/sources.list.d", f));
    }
  } catch {
    // no sources.list.d
  }
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    if (f.endsWith(".sources")) {
      for (const para of text.split(/\n\s*\n/)) {
        const field = (k: string) =>
          new RegExp(`^${k}:[ \\t]*(.*)$`, "im").exec(para)?.[1]?.trim().split(/\s+/).filter(Boolean) ?? [];
        if (!field("Types").includes("deb")) continue;
        if (field("Enabled")[0]?.toLowerCase() === "no") continue;
        for (const uri of field("URIs"))
          entries.push({ uri, suites: field("Suites"), components: field("Components") });
      }
    } else {
      for (const raw of text.split("\n")) {
        const line = raw.replace(/#.*/, "").trim();
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line);
        if (m?.[1] && m[2] && m[3] !== undefined) {
          entries.push({ uri: m[1], suites: [m[2]], components: m[3].split(/\s+/).filter(Boolean) });
        }
      }
    }
  }
  const out: string[] = [];
  for (const e of entries) {
    // the Debian archive and its mirrors/snapshots/proxies keep "debian" in the path or host name
    if (!/\/debian(-security)?(\/|$)|debian\.(org|net)/.test(e.uri)) continue;
    for (const s of e.suites) {
      if (s !== suite && !s.startsWith(`${suite}-`) && !s.startsWith(`${suite}/`)) continue;
      const line = `deb ${e.uri} ${s} ${(e.components.length ? e.components : ["main"]).join(" ")}`;
      if (!out.includes(line)) out.push(line);
    }
  }
  if (out.length === 0) out.push(`deb http://deb.debian.org/debian ${suite} main`);
  return out;
}

/** mmdebstrap's own phase messages → a rough fraction of the whole run (for progress bars). */
const MMDEBSTRAP_PHASES: [RegExp, number][] = [
  [/^I: (chroot architecture|automatically chosen)/, 0.02],
  [/^I: running apt-get update/, 0.05],
  [/^I: downloading packages/, 0.1],
  [/^I: extracting archives/, 0.3],
  [/^I: installing essential packages/, 0.4],
  [/^I: installing remaining packages/, 0.55],
  [/^I: cleaning package lists/, 0.9],
  [/^I: creating tarball/, 0.95],
];

const tarFlight = new SingleFlight<string>();

/** The mmdebstrap tree of `r` as a tarball, built when missing (the slow, network part). */
export function ensureTarball(r: Recipe, onProgress: (p: Progress) => void): Promise<string> {
  const out = tarballPath(r);
  if (existsSync(out)) return Promise.resolve(out);
  return tarFlight.do(out, () =>
    withFileLock(
      `${out}.lock`,
      async () => (existsSync(out) ? out : buildTarball(r, out, onProgress)),
      (pid) =>
        onProgress({ phase: "rootfs:wait", message: `another process (pid ${pid}) is building ${r.name}` }),
    ),
  );
}

async function buildTarball(r: Recipe, out: string, progress: (p: Progress) => void): Promise<string> {
  const mmdebstrap = which("mmdebstrap");
  if (!mmdebstrap)
    throw new HostdError("not_ready", "mmdebstrap is not installed (Debian package mmdebstrap)");
  if (process.getuid?.() !== 0)
    throw new HostdError("not_ready", "building root images needs root (mmdebstrap root mode)");
  const tmp = await tempDirIn(imageDir(r.name), r.treeHash);
  try {
    const target = join(tmp, "tree.tar");
    const args = [
      "--mode=root",
      `--variant=${r.variant}`,
      "--format=tar",
      `--include=${r.packages.join(",")}`,
      '--aptopt=Acquire::Languages "none"',
      ...DPKG_EXCLUDES.map((o) => `--dpkgopt=${o}`),
      r.suite,
      target,
      ...debianMirrors(r.suite),
    ];
    progress({
      phase: "rootfs:mmdebstrap",
      fraction: 0,
      message: `${r.name}: ${r.packages.length} packages`,
    });
    let fraction = 0;
    const log: string[] = [];
    const logPath = out.replace(/\.tar$/, ".log");
    try {
      await run(mmdebstrap, args, {
        env: { ...process.env, LC_ALL: "C.UTF-8", TMPDIR: tmp },
        timeoutMs: NO_TIMEOUT,
        onLine: (line) => {
          log.push(line);
          for (const [re, f] of MMDEBSTRAP_PHASES) {
            if (f > fraction && re.test(line)) {
              fraction = f;
              progress({ phase: "rootfs:mmdebstrap", fraction, message: `${r.name}: ${line.slice(3)}` });
            }
          }
        },
      });
    } finally {
      // kept next to the tarball: the first place to look when a package set misbehaves
      await writeFile(logPath, `mmdebstrap ${args.join(" ")}\n${log.join("\n")}\n`).catch(() => {});
    }
    await rename(target, out);
    return out;
  } finally {
    await rmrf(tmp);
  }
}

/** Allocated bytes and inode count of a tree (hard links counted once). */
async function treeUsage(root: string): Promise<{ bytes: number; inodes: number }> {
  let bytes = 0;
  let inodes = 0;
  const seen = new Set<number>();
  const walk = async (dir: string) => {
    for (const name of await readdir(dir)) {
      const p = join(dir, name);
      const st = await lstat(p);
      if (st.nlink > 1 && !st.isDirectory()) {
        if (seen.has(st.ino)) continue;
        seen.add(st.ino);
      }
      inodes++;
      bytes += Math.max(st.blocks * 512, st.isFile() ? st.size : 0);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return { bytes, inodes };
}

async function writeText(path: string, text: string, mode = 0o644): Promise<void> {
  await rm(path, { force: true }); // might be a symlink (resolv.conf) we must not follow
  await writeFile(path, text, { mode });
  await chmod(path, mode);
}

/** Files every sandbox image carries, written into the unpacked tree. */
async function customise(root: string, r: Recipe, agentBinary: string, trust: HostTrust): Promise<void> {
  await mkdir(join(root, "usr/local/sbin"), { recursive: true });
  await copyFile(agentBinary, join(root, AGENT_GUEST_PATH));
  await chmod(join(root, AGENT_GUEST_PATH), 0o755);

  await writeText(join(root, "etc/hostname"), `${r.hostname}\n`);
  await writeText(
    join(root, "etc/hosts"),
    `127.0.0.1\tlocalhost\n127.0.1.1\t${r.hostname}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n`,
  );
  await writeText(join(root, "etc/resolv.conf"), `nameserver ${GATEWAY_IP}\n`);
  // empty, not absent: systemd-style tools treat an empty file as "generate on first boot", and the
  // agent gives each VM (and each fork) its own identity anyway
  await writeText(join(root, "etc/machine-id"), "", 0o444);
  await rm(join(root, "var/lib/dbus/machine-id"), { force: true });
  await writeText(join(root, "etc/fstab"), "");
  await installTrust(root, trust);
  await mkdir(join(root, "root"), { recursive: true, mode: 0o700 });
  await chmod(join(root, "root"), 0o700);

  // root without a password (the agent is the way in; sshd still refuses empty passwords by default)
  const shadowPath = join(root, "etc/shadow");
  const shadow = await readFile(shadowPath, "utf8");
  await writeFile(
    shadowPath,
    shadow
      .split("\n")
      .map((l) => (l.startsWith("root:") ? l.replace(/^root:[^:]*:/, "root::") : l))
      .join("\n"),
  );

  // keys generated at build time would be shared by every sandbox: whoever starts sshd runs ssh-keygen -A
  const sshDir = join(root, "etc/ssh");
  if (existsSync(sshDir)) {
    for (const f of await readdir(sshDir)) {
      if (f.startsWith("ssh_host_")) await rm(join(sshDir, f), { force: true });
    }
  }
}

const imgFlight = new SingleFlight<string>();

/** The ext4 image of `r` with `agentBinary` installed, built from the cached tarballs when missing. */
export function ensureExt4(
  r: Recipe,
  tarballs: string[],
  agentBinary: string,
  agentHash: string,
  trust: HostTrust,
  onProgress: (p: Progress) => void,
): Promise<string> {
  const out = ext4Path(r, agentHash, trust);
  if (existsSync(out)) return Promise.resolve(out);
  return imgFlight.do(out, () =>
    withFileLock(`${out}.lock`, async () =>
      existsSync(out) ? out : buildExt4(r, tarballs, agentBinary, trust, out, onProgress),
    ),
  );
}

async function buildExt4(
  r: Recipe,
  tarballs: string[],
  agentBinary: string,
  trust: HostTrust,
  out: string,
  progress: (p: Progress) => void,
): Promise<string> {
  const mkfs = which("mkfs.ext4");
  if (!mkfs) throw new HostdError("not_ready", "mkfs.ext4 is not installed (Debian package e2fsprogs)");
  const tmp = await tempDirIn(imageDir(r.name), "ext4");
  try {
    const root = join(tmp, "root");
    await mkdir(root);
    progress({ phase: "rootfs:unpack", message: `${r.name}: unpacking the cached tree` });
    // the Debian tree first, then the layer over it
    for (const tarball of tarballs) {
      await run(
        "tar",
        [
          "-xf",
          tarball,
          "-C",
          root,
          "--numeric-owner",
          "--same-owner",
          "--same-permissions",
          "--xattrs",
          "--xattrs-include=*",
          // a layer's `./` entry must not reset the tree root's mode or times
          "--no-overwrite-dir",
        ],
        { timeoutMs: NO_TIMEOUT },
      );
    }
    await customise(root, r, agentBinary, trust);

    const usage = await treeUsage(root);
    // ext4 metadata (inode tables, journal, bitmaps) needs ~10% on top of the data; then the headroom
    const mib = Math.ceil((usage.bytes * 1.1) / 1048576) + r.headroomMib;
    const sizeMib = Math.max(1024, Math.ceil(mib / 64) * 64);
    // room for as many new files as the tree has, and at least the mkfs default density
    const inodes = Math.max(usage.inodes * 2 + 65536, Math.floor((sizeMib * 1048576) / 16384));
    progress({
      phase: "rootfs:mkfs",
      message: `${r.name}: tree ${fmtMiB(usage.bytes)}, ${usage.inodes} inodes → ${sizeMib} MiB ext4`,
    });
    const img = join(tmp, "image.ext4");
    await (await open(img, "w")).close();
    await truncate(img, sizeMib * 1048576); // sparse: only written blocks take disk space
    await run(
      mkfs,
      [
        "-F",
        "-q",
        "-L",
        "createos-root",
        "-m",
        "0",
        "-N",
        String(inodes),
        // zero the inode tables now: lazy init would make every guest write them into its overlay
        "-E",
        "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
        "-d",
        root,
        img,
      ],
      { timeoutMs: NO_TIMEOUT },
    );
    const fsck = which("e2fsck");
    if (fsck) await run(fsck, ["-f", "-n", img], { timeoutMs: NO_TIMEOUT });
    await rename(img, out);
    return out;
  } finally {
    await rmrf(tmp);
  }
}
