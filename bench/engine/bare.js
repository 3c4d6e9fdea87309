// "Bare QEMU restore → first agent answer": the floor the product's resume and fork are held against
// (issue 17). QEMU is launched directly with the argument vector the driver builds (hostd's qemuArgs, so
// the same devices in the same slots), `-incoming defer` of a paused sandbox's snapshot — no jail, no
// cgroup, no network namespace, no records, no daemon — and timed until the agent answers `hello`, then
// its first exec. The snapshot's RAM file and top disk layer are copied first (untimed, so they are in
// the page cache like the product's): the guest writes both, and the snapshot must stay resumable.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentClient } from "../../packages/hostd/dist/agent/client.js";
import { QmpClient, qemuArgs } from "../../packages/hostd/dist/index.js";
import { cpSparse, ip, procGone, signal, spawnDetached } from "../../packages/hostd/dist/sys/index.js";
import { sendState } from "../../packages/hostd/dist/vmm/migration.js";
import { QEMU_BIN, machinePaths } from "../../packages/hostd/dist/vmm/qemu.js";

const GUEST_MAC = "02:fc:00:00:00:01";
// The saved virtio-net state needs a TAP backend (vnet_hdr): one of our own in the root namespace, left
// down and without an address, so nothing the guest sends goes anywhere.
const TAP = `csbbare${process.pid % 100000}`;

/** Makes the bench's TAP (once per process); `dropTap` removes it. */
export async function makeTap() {
  await ip("tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr");
}
export async function dropTap() {
  await ip("link", "del", TAP).catch(() => undefined);
}

/** Snapshot `id` of the daemon whose data dir is `dataDir`, restored bare; ms per step and in total. */
export async function bareRestore(dataDir, id) {
  const sdir = join(dataDir, "hostd", "snapshots", id);
  const meta = JSON.parse(await readFile(join(sdir, "meta.json"), "utf8"));
  const dir = await mkdtemp(join(tmpdir(), "csb-bare-"));
  try {
    await Promise.all([
      cpSparse(join(sdir, "ram"), join(dir, "ram")),
      cpSparse(join(sdir, "disk.qcow2"), join(dir, "disk.qcow2")),
    ]);
    return await timed(meta, dir, join(sdir, "state"));
  } catch (e) {
    const qlog = await readFile(join(dir, "qemu.log"), "utf8").catch(() => "");
    if (qlog) e.message += `\n--- qemu.log ---\n${qlog.slice(-1500)}`;
    throw e;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function timed(meta, dir, state) {
  const c = {
    dir,
    vcpu: meta.vcpu,
    memMib: meta.mem_mib,
    kernel: meta.kernel,
    cmdline: meta.cmdline,
    ramPath: join(dir, "ram"),
    diskPath: join(dir, "disk.qcow2"),
    mac: GUEST_MAC,
    accel: meta.accel,
    tbSizeMib: meta.tb_size_mib,
  };
  const p = machinePaths(dir);
  const argv = qemuArgs({ ...c, tap: TAP }, p, { incoming: true });
  const laps = {};
  const t0 = performance.now();
  let last = t0;
  const lap = (k) => {
    const t = performance.now();
    laps[k] = t - last;
    last = t;
  };
  const q = await spawnDetached(QEMU_BIN, argv, { logPath: join(dir, "qemu.log") });
  let qmp;
  const agent = new AgentClient(p.agent);
  try {
    qmp = await QmpClient.connect(p.qmp, 30_000);
    lap("launch");
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "x-ignore-shared", state: true },
        { capability: "events", state: true },
      ],
    });
    const sock = join(dir, "mig.sock");
    await qmp.execute("migrate-incoming", { uri: `unix:${sock}` });
    await sendState(sock, state, 10_000);
    for (;;) {
      const s = await qmp.execute("query-migrate");
      if (s.status === "completed") break;
      if (s.status === "failed") throw new Error(`bare restore failed: ${s["error-desc"]}`);
      await new Promise((r) => setTimeout(r, 1));
    }
    lap("incoming");
    await qmp.execute("cont");
    lap("cont");
    await agent.waitReady({ timeoutMs: 30_000 });
    lap("hello");
    const helloMs = performance.now() - t0;
    const r = await agent.exec({ argv: ["true"] });
    if (r.exit_code !== 0) throw new Error("bare restore: true failed");
    lap("exec");
    return { helloMs, execMs: performance.now() - t0, execWallMs: (r.wall_us ?? Number.NaN) / 1000, laps };
  } finally {
    agent.close();
    await qmp?.execute("quit").catch(() => undefined);
    qmp?.close();
    for (let i = 0; i < 200 && !procGone(q.pid); i++) await new Promise((r) => setTimeout(r, 5));
    if (!procGone(q.pid)) signal(q.pid, "SIGKILL");
    await q.exited;
  }
}
