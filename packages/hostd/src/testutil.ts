import assert from "node:assert/strict";
/**
 * Helpers shared by the VM integration tests (not named *.test.ts: it registers no test, so the runner must not count it as one).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chownSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ExecRequest, HostDaemon, VmSpec } from "@createos-sandbox/protocol";
import type { ImagesApi, LocalHostDaemon, OpenOptions } from "./daemon.js";
import { catalog } from "./images/index.js";

export const TEST_IMAGE = process.env.CREATEOS_TEST_IMAGE ?? "debian:12";

/**
 * Open options for tests. CREATEOS_TEST_KERNEL + CREATEOS_TEST_ROOTFS pin an already built kernel and
 * rootfs (for working on the engine while the image recipes change and rebuild); unset, the real images
 * module builds and caches what is missing.
 */
export function openOpts(dataDir: string): OpenOptions {
  const kernel = process.env.CREATEOS_TEST_KERNEL;
  const rootfs = process.env.CREATEOS_TEST_ROOTFS;
  if (!kernel || !rootfs) return { dataDir };
  const img = {
    name: TEST_IMAGE,
    kernel,
    rootfs,
    hash: `pinned-${createHash("sha256")
      .update(kernel + rootfs)
      .digest("hex")
      .slice(0, 12)}`,
  };
  const images: Partial<ImagesApi> = {
    catalog: () => [{ name: TEST_IMAGE, description: "pinned by CREATEOS_TEST_KERNEL/ROOTFS" }],
    builtImage: () => img,
    ensureImage: async () => img,
    ensureKernel: async () => kernel,
  };
  return { dataDir, images };
}

/** Images the catalog test creates from: the whole catalog, or just the pinned one. */
export function catalogNames(): string[] {
  if (process.env.CREATEOS_TEST_KERNEL && process.env.CREATEOS_TEST_ROOTFS) return [TEST_IMAGE];
  return catalog().map((i) => i.name);
}

export function tempDataDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `csb-${tag}-`));
}

/**
 * A file outside a VM-like dir that a planted link names (the /etc/shadow of the tests): another uid's,
 * with a mode of its own. `assertIntact` checks that nothing the daemon did wrote, truncated, chowned or
 * chmodded it. Needs root (the chown), as the daemon does.
 */
export function victimFile(dir: string, name = "victim"): { path: string; assertIntact(what: string): void } {
  const path = join(dir, name);
  const bytes = "the victim's own bytes\n";
  writeFileSync(path, bytes, { mode: 0o640 });
  chownSync(path, 4242, 4243);
  return {
    path,
    assertIntact(what) {
      const s = lstatSync(path);
      assert.equal(readFileSync(path, "utf8"), bytes, `${what}: the victim's content`);
      assert.deepEqual([s.uid, s.gid], [4242, 4243], `${what}: the victim's owner`);
      assert.equal(s.mode & 0o7777, 0o640, `${what}: the victim's mode`);
    },
  };
}

let n = 0;
export function spec(over: Partial<VmSpec> = {}): VmSpec {
  n++;
  const id = over.sandbox_id ?? `t${process.pid}-${n}-${Math.random().toString(36).slice(2, 7)}`;
  return {
    sandbox_id: id,
    hostname: over.hostname ?? `h-${id}`.slice(0, 60).replace(/[^A-Za-z0-9-]/g, "-"),
    image: TEST_IMAGE,
    vcpu: 1,
    mem_mib: 256,
    disk_mib: 2048,
    envs: {},
    ...over,
  };
}

export async function run(
  d: Pick<HostDaemon, "exec">,
  id: string,
  argv: string[],
  extra: Omit<ExecRequest, "argv"> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const r = await d.exec(
    id,
    { argv, ...extra },
    { onStdout: (c) => out.push(Buffer.from(c)), onStderr: (c) => err.push(Buffer.from(c)) },
  );
  if (r.error) throw new Error(`exec ${argv.join(" ")}: ${r.error}`);
  return { code: r.exit_code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

export async function sh(d: Pick<HostDaemon, "exec">, id: string, script: string): Promise<string> {
  const r = await run(d, id, ["sh", "-c", script]);
  if (r.code !== 0) throw new Error(`sh -c ${script} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

export async function drain(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

export function bufferStream(b: Buffer, chunk = 256 * 1024): Readable {
  let off = 0;
  return new Readable({
    read() {
      if (off >= b.length) this.push(null);
      else {
        this.push(b.subarray(off, off + chunk));
        off += chunk;
      }
    },
  });
}

/** What a VM could leave behind on the host, counted. */
export function hostFootprint(dataDir: string): {
  netns: string[];
  links: string[];
  qemu: number[];
  vmFiles: string[];
  routes: string[];
} {
  const netns = existsSync("/run/netns") ? readdirSync("/run/netns").filter((x) => x.startsWith("csb-")) : [];
  const links = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
    .split("\n")
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? "")
    .filter((x) => x.startsWith("csbv"));
  const qemu: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8");
      if (cmd.startsWith("qemu-system") && cmd.includes(dataDir)) qemu.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  const vmsDir = join(dataDir, "hostd", "vms");
  const vmFiles = existsSync(vmsDir) ? readdirSync(vmsDir) : [];
  const routes = execFileSync("ip", ["route", "show"], { encoding: "utf8" })
    .split("\n")
    .filter((l) => l.includes("csbv"));
  return { netns, links, qemu, vmFiles, routes };
}

/** Network slots a daemon on `dataDir` holds now: its VMs (pooled ones included) and its namespace pool. */
export function ourSlots(dataDir: string): Set<number> {
  const out = new Set<number>();
  const vms = join(dataDir, "hostd", "vms");
  for (const name of existsSync(vms) ? readdirSync(vms) : []) {
    try {
      out.add((JSON.parse(readFileSync(join(vms, name, "vm.json"), "utf8")) as { slot: number }).slot);
    } catch {
      // a symlink to a dir already counted, or no record yet
    }
  }
  try {
    for (const s of JSON.parse(readFileSync(join(dataDir, "hostd", "netpool.json"), "utf8")) as number[])
      out.add(s);
  } catch {
    // no pool file
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
