import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { HostdError } from "@createos-sandbox/protocol";
import { agentHash, goBuild } from "./agent.js";
import { DPKG_EXCLUDES, loadRecipes, recipeHash, sanitiseName } from "./catalog.js";
import { hostKhz } from "./hostinfo.js";
import { builtImage, cacheDir, catalog, defaultImage, ensureImage, kernelCmdline } from "./index.js";
import { kernelFragmentPath, kernelHash, missingOptions, parseFragment } from "./kernel.js";
import { debianMirrors } from "./rootfs.js";
import { hashTree, sha256, withFileLock } from "./util.js";

test("catalog lists the three images with devbox:1 as the only default", () => {
  const c = catalog();
  assert.deepEqual(
    c.map((x) => x.name),
    ["debian:12", "devbox:1", "nodeops/sandbox:debian"],
  );
  assert.deepEqual(
    c.filter((x) => x.default).map((x) => x.name),
    ["devbox:1"],
  );
  assert.equal(defaultImage(), "devbox:1");
  for (const x of c) assert.ok(x.description.length > 10, `${x.name} has a description`);
});

test("recipes inherit their base's packages", () => {
  const byName = new Map(loadRecipes().map((r) => [r.name, r]));
  const debian = byName.get("debian:12");
  const devbox = byName.get("devbox:1");
  const tmpl = byName.get("nodeops/sandbox:debian");
  assert.ok(debian && devbox && tmpl);
  for (const p of [
    "bash",
    "coreutils",
    "iproute2",
    "iputils-ping",
    "curl",
    "ca-certificates",
    "python3-minimal",
  ]) {
    assert.ok(debian.packages.includes(p), `debian:12 has ${p}`);
    assert.ok(devbox.packages.includes(p), `devbox:1 inherits ${p}`);
    assert.ok(tmpl.packages.includes(p), `template base inherits ${p}`);
  }
  for (const p of ["git", "build-essential", "python3-pip", "openssh-server", "ripgrep", "jq", "s3fs"]) {
    assert.ok(devbox.packages.includes(p), `devbox:1 has ${p}`);
  }
  assert.ok(tmpl.packages.includes("apt"));
  assert.equal(devbox.suite, "bookworm");
  assert.equal(devbox.variant, "minbase");
  assert.equal(new Set(loadRecipes().map((r) => r.hash)).size, 3, "recipe hashes differ");
});

test("recipe hashes are stable and sensitive to what changes the image", () => {
  const r = loadRecipes()[0];
  assert.ok(r);
  const { hash, ...rest } = r;
  assert.equal(recipeHash(rest), hash);
  assert.equal(recipeHash({ ...rest, packages: [...rest.packages] }), hash);
  assert.equal(
    recipeHash({ ...rest, description: "something else" }),
    hash,
    "description is not part of the image",
  );
  assert.notEqual(recipeHash({ ...rest, packages: [...rest.packages, "vim"] }), hash);
  assert.notEqual(recipeHash({ ...rest, hostname: "other" }), hash);
  assert.match(hash, /^[0-9a-f]{16}$/);
  assert.ok(DPKG_EXCLUDES.some((e) => e.includes("/usr/share/man")));
});

test("sha256 parts are length-prefixed; hashTree follows sorted paths and contents, skips excluded dirs", () => {
  assert.notEqual(sha256("ab", "c"), sha256("a", "bc"));
  assert.equal(sha256("x"), sha256("x"));
  const dir = mkdtempSync(join(tmpdir(), "csb-hash-"));
  try {
    writeFileSync(join(dir, "a.go"), "package a\n");
    writeFileSync(join(dir, "b.go"), "package b\n");
    const h1 = hashTree(dir, ["bin"]);
    assert.equal(hashTree(dir, ["bin"]), h1, "stable");
    rmSync(join(dir, "a.go"));
    writeFileSync(join(dir, "a.go"), "package a\n");
    assert.equal(hashTree(dir, ["bin"]), h1, "mtime does not matter");
    writeFileSync(join(dir, "c.txt"), "");
    assert.notEqual(hashTree(dir, ["bin"]), h1, "a new file changes the hash");
    rmSync(join(dir, "c.txt"));
    mkdirSync(join(dir, "empty"));
    assert.equal(hashTree(dir, ["bin"]), h1, "empty dirs do not matter");
    mkdirSync(join(dir, "bin"));
    writeFileSync(join(dir, "bin", "createos-agent"), "binary");
    assert.equal(hashTree(dir, ["bin"]), h1, "bin/ is excluded");
    writeFileSync(join(dir, "a.go"), "package a // changed\n");
    assert.notEqual(hashTree(dir, ["bin"]), h1, "content changes the hash");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("kernel hash is stable and the fragment asks for what sandboxes need", () => {
  assert.equal(kernelHash(), kernelHash());
  const frag = parseFragment(readFileSync(kernelFragmentPath(), "utf8"));
  for (const opt of [
    "CONFIG_64BIT",
    "CONFIG_PVH",
    "CONFIG_VIRTIO_MMIO",
    "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_BLK",
    "CONFIG_VIRTIO_NET",
    "CONFIG_VIRTIO_CONSOLE",
    "CONFIG_HW_RANDOM_VIRTIO",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_EXT4_FS",
    "CONFIG_OVERLAY_FS",
    "CONFIG_FUSE_FS",
    "CONFIG_DEVTMPFS",
    "CONFIG_MEMCG",
    "CONFIG_CGROUP_PIDS",
    "CONFIG_USER_NS",
    "CONFIG_NET_NS",
    "CONFIG_SECCOMP_FILTER",
    "CONFIG_NF_TABLES",
    "CONFIG_IP_NF_IPTABLES",
    "CONFIG_BRIDGE",
    "CONFIG_VETH",
    "CONFIG_TUN",
    "CONFIG_IPV6",
    "CONFIG_IP_PNP",
    "CONFIG_UNIX98_PTYS",
    "CONFIG_BINFMT_SCRIPT",
    "CONFIG_NO_HZ_IDLE",
    "CONFIG_HZ_100",
  ]) {
    assert.equal(frag.get(opt), "y", `${opt}=y in the fragment`);
  }
  assert.equal(frag.get("CONFIG_MODULES"), "n");
  assert.equal(frag.get("CONFIG_NR_CPUS"), "8");
});

test("missingOptions reports options Kconfig dropped", () => {
  const frag = parseFragment("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=8\nCONFIG_D=y\n");
  const dot = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=4\n";
  assert.deepEqual(missingOptions(frag, dot), ["CONFIG_C (wanted 8, got 4)", "CONFIG_D (wanted y, got n)"]);
});

test("kernelCmdline carries the TSC, root, init and static-address parameters", () => {
  const c = kernelCmdline({ hostKhz: 1996249 });
  for (const p of [
    "console=ttyS0",
    "acpi=off",
    "reboot=t",
    "panic=-1",
    "tsc_early_khz=1996249",
    "tsc=reliable",
    "lpj=7984996",
    "no_timer_check",
    "root=/dev/vda",
    "rw",
    "init=/usr/local/sbin/createos-agent",
    "quiet",
    "ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off",
  ]) {
    assert.ok(c.split(" ").includes(p), `${p} in ${c}`);
  }
  const v = kernelCmdline({ hostKhz: 2000000.4, init: "/bin/sh", verbose: true, network: false });
  assert.ok(!v.includes("quiet"));
  assert.ok(!v.includes("ip="));
  assert.ok(v.includes(" init=/bin/sh ") && v.includes("tsc_early_khz=2000000 "), v);
  // QEMU appends virtio_mmio.device= at the end: anything after "--" would go to init instead
  assert.ok(!c.includes("--") && !v.includes("--"));
  assert.throws(() => kernelCmdline({ hostKhz: 0 }), HostdError);
});

test("hostKhz reads cpu MHz", () => {
  assert.equal(hostKhz("processor\t: 0\ncpu MHz\t\t: 1996.249\n"), 1996249);
  assert.ok(hostKhz() > 100_000);
});

test("unknown image names are a bad_request", async () => {
  await assert.rejects(
    ensureImage("nope:1"),
    (e: unknown) => e instanceof HostdError && e.code === "bad_request",
  );
  assert.equal(builtImage("nope:1"), undefined);
});

test("image names map to safe directory names", () => {
  assert.equal(sanitiseName("nodeops/sandbox:debian"), "nodeops_sandbox_debian");
  assert.equal(sanitiseName("debian:12"), "debian_12");
});

test("Debian mirrors come from this host's apt configuration, Debian only", () => {
  const m = debianMirrors("bookworm");
  assert.ok(m.length >= 1);
  for (const line of m) assert.match(line, /^deb \S*debian\S* bookworm(-updates|-security)? /);
});

test("cacheDir honours CREATEOS_SANDBOX_CACHE", () => {
  const saved = process.env.CREATEOS_SANDBOX_CACHE;
  process.env.CREATEOS_SANDBOX_CACHE = "/tmp/csb-cache-test";
  try {
    assert.equal(cacheDir(), "/tmp/csb-cache-test");
  } finally {
    if (saved === undefined) Reflect.deleteProperty(process.env, "CREATEOS_SANDBOX_CACHE");
    else process.env.CREATEOS_SANDBOX_CACHE = saved;
  }
});

test("goBuild makes a static binary from a Go module", { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "csb-go-"));
  try {
    await mkdir(join(dir, "cmd", "hello"), { recursive: true });
    writeFileSync(join(dir, "go.mod"), "module example.com/hello\n\ngo 1.19\n");
    writeFileSync(join(dir, "cmd", "hello", "main.go"), 'package main\n\nfunc main() { println("hi") }\n');
    const out = join(dir, "hello");
    await goBuild(dir, "./cmd/hello", out);
    assert.ok(existsSync(out));
    assert.ok(statSync(out).mode & 0o100, "executable");
    // a static ELF has no PT_INTERP: the interpreter path string is absent
    assert.ok(!readFileSync(out).includes("ld-linux"), "statically linked");
    assert.match(agentHash(dir), /^[0-9a-f]{16}$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("withFileLock serialises holders across callers and takes over a dead holder's lock", async () => {
  const dir = mkdtempSync(join(tmpdir(), "csb-lock-"));
  try {
    const lock = join(dir, "x.lock");
    const order: string[] = [];
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const a = withFileLock(lock, async () => {
      order.push("a-start");
      await pause(300);
      order.push("a-end");
    });
    await pause(50);
    let waitedFor = 0;
    const b = withFileLock(
      lock,
      async () => {
        order.push("b");
      },
      (pid) => {
        waitedFor = pid;
      },
    );
    await Promise.all([a, b]);
    assert.deepEqual(order, ["a-start", "a-end", "b"]);
    assert.equal(waitedFor, process.pid);
    assert.ok(!existsSync(lock), "released");

    const dead = spawnSync("true").pid;
    assert.ok(dead);
    writeFileSync(lock, String(dead));
    assert.equal(await withFileLock(lock, async () => "took over"), "took over");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
