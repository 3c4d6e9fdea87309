// Helpers shared by the engine benchmark's in-process run (run.js), its paired in-process vs remote run
// (paired.js) and the daemon process the paired run serves (serve-daemon.js).

/** Daemon open options; a pinned kernel/rootfs (CREATEOS_BENCH_KERNEL + CREATEOS_BENCH_ROOTFS) skips the images module's build check. */
export function openOpts(image, dir, extra = {}) {
  const kernel = process.env.CREATEOS_BENCH_KERNEL;
  const rootfs = process.env.CREATEOS_BENCH_ROOTFS;
  if (!kernel || !rootfs) return { dataDir: dir, ...extra };
  const img = {
    name: image,
    kernel,
    rootfs,
    hash: `pinned-${kernel.split("/").at(-2)}-${rootfs.split("/").at(-1)}`,
  };
  const images = {
    catalog: () => [{ name: image, description: "pinned" }],
    builtImage: () => img,
    ensureImage: async () => img,
    ensureKernel: async () => kernel,
  };
  return { dataDir: dir, images, ...extra };
}

export function shapeOf(mem) {
  return { vcpu: mem >= 2048 ? 2 : 1, mem_mib: mem };
}

let seq = 0;
export function spec(image, mem, over = {}) {
  const id = `bench-${process.pid}-${++seq}`;
  return { sandbox_id: id, hostname: id, image, disk_mib: 4096, envs: {}, ...shapeOf(mem), ...over };
}

export function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
export const p50 = (xs) => pct(xs, 50);
export const p95 = (xs) => pct(xs, 95);
export const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : "–");
export const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
export const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : "–");
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const log = (...a) => process.stderr.write(`${a.join(" ")}\n`);

/** Runs a shell script in the guest; its stdout, or throws on a non-zero exit. */
export async function sh(d, id, script) {
  const out = [];
  const r = await d.exec(id, { argv: ["sh", "-c", script] }, { onStdout: (c) => out.push(Buffer.from(c)) });
  if (r.exit_code !== 0) throw new Error(`${script}: exit ${r.exit_code} ${r.error ?? ""}`);
  return Buffer.concat(out).toString();
}

export async function firstExec(d, id) {
  const r = await d.exec(id, { argv: ["true"] });
  if (r.exit_code !== 0) throw new Error("true failed");
  return r;
}

// Dirties 128 MiB of guest RAM with random bytes (a process writes them into its own memory and
// exits: /tmp is a tmpfs capped at half of a 256 MiB guest's RAM). 1 MiB of urandom is repeated, since
// urandom itself is slow under TCG; every page is still written.
export const DIRTY =
  'python3 -c "import os; n=128; b=bytearray(n<<20); c=os.urandom(1<<20)\nfor i in range(n): b[i<<20:(i+1)<<20]=c"';

/** A deterministic, incompressible-enough body for the file transfer rows. */
export function fileBody(mib) {
  const body = Buffer.alloc(mib * 2 ** 20);
  for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
  return body;
}

/** Drains a download, checking its size. */
export async function drain(body, want) {
  let n = 0;
  for await (const c of body) n += c.length;
  if (n !== want) throw new Error(`download size ${n}, want ${want}`);
}
