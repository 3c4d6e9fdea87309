import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { link, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { Host } from "../host.js";
import { Layout, type SnapMeta, type SnapState, type VmRecord, readSnapMeta } from "../records.js";
import { CRASH_POINTS, CRASH_POINT_ENV } from "../sys/crash.js";
import { finishFreeze } from "./layers.js";
import { recoverSnapshots, snapRecovery } from "./recover.js";

test("snapRecovery: each marker state is kept, finished, rolled back or declared lost", () => {
  const alive = (state: VmRecord["state"], from?: string) => ({
    state,
    from_snapshot: from,
    qemu_alive: true,
  });
  assert.equal(snapRecovery("complete", "s", undefined), "keep");
  assert.equal(snapRecovery("pending", "s", alive("running")), "discard");
  assert.equal(snapRecovery("pending", "s", undefined), "discard");
  assert.equal(snapRecovery("saved", "s", alive("running")), "give_back");
  assert.equal(snapRecovery("saved", "s", undefined), "give_back");
  assert.equal(snapRecovery("resuming", "s", alive("starting", "s")), "give_back");
  assert.equal(snapRecovery("consumed", "s", alive("running", "s")), "drop");
  assert.equal(snapRecovery("consumed", "s", alive(undefined, "s")), "drop");
  assert.equal(snapRecovery("consumed", "s", alive("starting", "s")), "resave");
  assert.equal(snapRecovery("consumed", "s", alive("starting", "other")), "lost");
  assert.equal(
    snapRecovery("consumed", "s", { state: "starting", from_snapshot: "s", qemu_alive: false }),
    "lost",
  );
  assert.equal(snapRecovery("consumed", "s", undefined), "lost");
});

/** A Host with only what recovery touches, and no QEMU anywhere. */
function fakeHost(layout: Layout, cleaned: string[], warnings: string[]): Host {
  return {
    layout,
    log: { info() {}, warn: (m: string) => warnings.push(m), error() {} },
    pidOfStale: async () => 0,
    killStale: async () => undefined,
    cleanupVmFiles: async (_rec: VmRecord, dir: string) => {
      cleaned.push(dir);
      await rm(dir, { recursive: true, force: true });
    },
    driver: { adopt: async () => undefined },
  } as unknown as Host;
}

const meta = (id: string, sandbox: string, state: SnapState): SnapMeta => ({
  image: "debian:12",
  image_hash: "h",
  vcpu: 1,
  mem_mib: 256,
  kernel: "k",
  cmdline: "c",
  accel: "tcg",
  tb_size_mib: 32,
  chain: [],
  snapshot_id: id,
  sandbox_id: sandbox,
  hostname: "h",
  disk_mib: 1024,
  pause_ms: 1,
  created_at: "2026-01-01T00:00:00Z",
  state,
});

async function snapDir(layout: Layout, m: SnapMeta, files: string[]): Promise<string> {
  const d = layout.snapDir(m.snapshot_id);
  await mkdir(d, { recursive: true });
  await writeFile(join(d, "meta.json"), JSON.stringify(m));
  for (const f of files) await writeFile(join(d, f), `${m.snapshot_id}:${f}`);
  return d;
}

async function vmDir(layout: Layout, sandbox: string, files: string[], rec: Partial<VmRecord> = {}) {
  const d = layout.vmDir(sandbox);
  await mkdir(d, { recursive: true });
  await writeFile(join(d, "vm.json"), JSON.stringify({ sandbox_id: sandbox, slot: 1, chain: [], ...rec }));
  for (const f of files) await writeFile(join(d, f), `vm:${f}`);
}

test("recoverSnapshots finishes, discards, gives back and quarantines by marker", async () => {
  const root = await mkdtemp(join(tmpdir(), "csb-recover-"));
  try {
    const layout = new Layout(root, join(root, "cache"));
    await mkdir(layout.vms, { recursive: true });
    await mkdir(layout.snaps, { recursive: true });
    const cleaned: string[] = [];
    const warnings: string[] = [];
    // A pause that crashed after `saved`, half-way through its renames: RAM moved, disk not yet.
    await snapDir(layout, meta("s-saved", "sb-a", "saved"), ["state", "ram"]);
    await vmDir(layout, "sb-a", ["disk.qcow2"], { state: "running" });
    // A pause that crashed before its state was valid: the VM keeps everything.
    await snapDir(layout, meta("s-pending", "sb-b", "pending"), ["state"]);
    // A resume that crashed after moving the files over, before the guest ran.
    await snapDir(layout, meta("s-resuming", "sb-c", "resuming"), ["state"]);
    await vmDir(layout, "sb-c", ["ram", "disk.qcow2"], { state: "starting", from_snapshot: "s-resuming" });
    // A resumed guest that ran, and whose QEMU is gone: its RAM matches no state.
    await snapDir(layout, meta("s-consumed", "sb-d", "consumed"), ["state"]);
    // Complete and intact; complete with a file missing; no meta at all; an empty dir.
    await snapDir(layout, meta("s-ok", "sb-e", "complete"), ["ram", "state", "disk.qcow2"]);
    await snapDir(layout, meta("s-torn", "sb-f", "complete"), ["ram", "state"]);
    await mkdir(layout.snapDir("s-nometa"));
    await writeFile(join(layout.snapDir("s-nometa"), "ram"), "x");
    // A pause that crashed between its mkdir and its first meta.json (only a temp file), and a delete
    // that crashed after renaming the dir aside.
    await mkdir(layout.snapDir("s-empty"));
    await writeFile(join(layout.snapDir("s-empty"), "meta.json.tmp-12-3"), "{");
    await snapDir(layout, meta("_gone-s-old-x1", "sb-g", "complete"), ["ram"]);

    await recoverSnapshots(fakeHost(layout, cleaned, warnings));

    const snaps = (await readdir(layout.snaps)).sort();
    assert.deepEqual(snaps, ["s-ok", "s-resuming", "s-saved"]);
    for (const id of ["s-saved", "s-resuming"]) {
      assert.equal((await readSnapMeta(layout.snapDir(id)))?.state, "complete", id);
      assert.deepEqual((await readdir(layout.snapDir(id))).sort(), [
        "disk.qcow2",
        "meta.json",
        "ram",
        "state",
      ]);
    }
    assert.equal(await readFile(join(layout.snapDir("s-saved"), "disk.qcow2"), "utf8"), "vm:disk.qcow2");
    assert.deepEqual(cleaned.sort(), [layout.vmDir("sb-a"), layout.vmDir("sb-c")]);
    const q = (await readdir(layout.quarantine)).map((n) => n.replace(/\.\d+$/, "")).sort();
    assert.deepEqual(q, ["s-consumed", "s-nometa", "s-torn"], "set aside, not deleted");
    assert.ok(warnings.includes("quarantined what re-adoption could not explain"));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("an interrupted resume of a RAM layer's snapshot keeps the snapshot's RAM, not the VM's copy", async () => {
  const root = await mkdtemp(join(tmpdir(), "csb-recover-"));
  try {
    const layout = new Layout(root, join(root, "cache"));
    await mkdir(layout.vms, { recursive: true });
    await mkdir(layout.snaps, { recursive: true });
    const cleaned: string[] = [];
    // The resume copied the RAM (a copy maybe cut short) and moved the disk; the guest never ran.
    const m = { ...meta("s-rl", "sb-rl", "resuming"), ram_layer: join(root, "ram-layers", "x.ram") };
    await snapDir(layout, m, ["state", "ram"]);
    await vmDir(layout, "sb-rl", ["ram", "disk.qcow2"], { state: "starting", from_snapshot: "s-rl" });
    await recoverSnapshots(fakeHost(layout, cleaned, []));
    const sdir = layout.snapDir("s-rl");
    assert.equal((await readSnapMeta(sdir))?.state, "complete");
    assert.equal(await readFile(join(sdir, "ram"), "utf8"), "s-rl:ram", "the snapshot's own RAM");
    assert.equal(await readFile(join(sdir, "disk.qcow2"), "utf8"), "vm:disk.qcow2", "the disk came back");
    assert.deepEqual(cleaned, [layout.vmDir("sb-rl")]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("a snapshot dir whose delete is cut short leaves nothing under the snapshot's name", async () => {
  const root = await mkdtemp(join(tmpdir(), "csb-recover-"));
  try {
    const layout = new Layout(root, join(root, "cache"));
    await mkdir(layout.vms, { recursive: true });
    await mkdir(layout.snaps, { recursive: true });
    const sdir = await snapDir(layout, meta("s-pend", "sb-p", "pending"), ["state"]);
    // A mount point inside cannot be deleted: the delete fails part-way, as a crash would stop it.
    await mkdir(join(sdir, "pin"));
    execFileSync("mount", ["-t", "tmpfs", "tmpfs", join(sdir, "pin")]);
    try {
      await recoverSnapshots(fakeHost(layout, [], []));
    } finally {
      // Wherever the dir went (moved aside, or set aside in quarantine/).
      for (const d of [layout.snaps, layout.quarantine])
        for (const n of await readdir(d).catch(() => [] as string[]))
          spawnSync("umount", [join(d, n, "pin")]);
    }
    const left = await readdir(layout.snaps);
    assert.ok(!left.includes("s-pend"), "not under its own name");
    assert.deepEqual(await readdir(layout.quarantine).catch(() => []), [], "nor quarantined for ever");
    assert.equal(left.length, 1);
    assert.ok(left[0]!.startsWith("_gone-s-pend-"), "moved aside, for the next start to delete");
    // Which it does.
    await recoverSnapshots(fakeHost(layout, [], []));
    assert.deepEqual(await readdir(layout.snaps), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("finishFreeze completes a freeze meta.json names and undoes one it does not", async () => {
  const root = await mkdtemp(join(tmpdir(), "csb-freeze-"));
  try {
    const layer = join(root, "layer.qcow2");
    const sdir = join(root, "snap");
    await mkdir(sdir);
    const top = join(sdir, "disk.qcow2");
    await writeFile(top, "full");
    await link(top, layer);
    await writeFile(`${top}.new`, "overlay");
    // Crash after the overlay was made, before meta.json named the layer: the top stays the full layer.
    await finishFreeze(sdir, { ...meta("s", "sb", "complete"), chain: [] });
    assert.equal(await readFile(top, "utf8"), "full");
    assert.equal((await stat(top)).mode & 0o777, 0o600);
    await writeFile(`${top}.new`, "overlay");
    // Crash after meta.json named it: the overlay takes the top's place.
    await finishFreeze(sdir, { ...meta("s", "sb", "complete"), chain: [layer], frozen: true });
    assert.equal(await readFile(top, "utf8"), "overlay");
    assert.equal(await readFile(layer, "utf8"), "full");
    assert.deepEqual((await readdir(sdir)).sort(), ["disk.qcow2"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("a crash point SIGKILLs the process that reaches it, and only that one", () => {
  const script = `import("${new URL("../sys/crash.js", import.meta.url).href}").then((m) => {
    m.crashPoint("pause.after_rename"); m.crashPoint(process.argv[1]); console.log("survived");
  })`;
  for (const point of CRASH_POINTS) {
    const env = { ...process.env, [CRASH_POINT_ENV]: point };
    const r = spawnSync(process.execPath, ["-e", script, "fork.after_copy"], { env, encoding: "utf8" });
    const dies = point === "pause.after_rename" || point === "fork.after_copy";
    assert.equal(r.signal, dies ? "SIGKILL" : null, point);
    assert.equal(r.stdout.trim(), dies ? "" : "survived", point);
  }
});
