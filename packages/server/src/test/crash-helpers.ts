/**
 * What the crash tests check after every restart, from the outside: the API's statuses, the database's
 * snapshot ids, the host daemon's dirs and the machine's QEMU processes must tell one story.
 */
import assert from "node:assert/strict";
import { existsSync, lstatSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { HELD } from "../state.js";
import { SqliteStore } from "../store/sqlite.js";
import type { SandboxRow } from "../store/types.js";
import { qemuPids } from "./engine-helpers.js";
import { type ServerProc, call } from "./helpers.js";

export const SETTLED = ["running", "paused", "failed", "error", "destroyed"];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function rowsOf(dataDir: string): Promise<SandboxRow[]> {
  const store = SqliteStore.open(join(dataDir, "db.sqlite"));
  try {
    return await store.sandboxesInStatus([...HELD]);
  } finally {
    await store.close();
  }
}

/** Waits until no sandbox of this key is in a transitional status; answers id → status. */
export async function settleAll(
  s: ServerProc,
  key: string,
  timeoutMs = 180_000,
): Promise<Map<string, string>> {
  const t0 = Date.now();
  for (;;) {
    const l = await call(s.url, "GET", "/v1/sandboxes?limit=500", { key });
    assert.equal(l.status, 200, l.text);
    const all = l.json.data.data as { id: string; status: string }[];
    if (all.every((x) => SETTLED.includes(x.status))) return new Map(all.map((x) => [x.id, x.status]));
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`not settled: ${JSON.stringify(all.filter((x) => !SETTLED.includes(x.status)))}`);
    await sleep(250);
  }
}

const readIf = (p: string) => (existsSync(p) ? readFileSync(p, "utf8") : "");

/** The live VM dirs (not pooled, not being deleted) and complete snapshot dirs of the host daemon. */
function onDisk(dataDir: string): { vms: string[]; snaps: string[]; quarantined: string[] } {
  const root = join(dataDir, "hostd");
  const ls = (d: string) => (existsSync(d) ? readdirSync(d) : []);
  const vms = ls(join(root, "vms")).filter(
    (n) => !n.startsWith("_") && !lstatSync(join(root, "vms", n)).isSymbolicLink(),
  );
  const snaps = ls(join(root, "snapshots")).filter((n) => {
    const m = join(root, "snapshots", n, "meta.json");
    return existsSync(m) && (JSON.parse(readFileSync(m, "utf8")).state ?? "complete") === "complete";
  });
  return { vms: vms.sort(), snaps: snaps.sort(), quarantined: ls(join(root, "quarantine")) };
}

/**
 * Every running row has its VM dir and exactly one QEMU, no VM dir or QEMU belongs to anything else; the
 * complete snapshots on disk are exactly the ones rows record; nothing was quarantined. Polled briefly:
 * a paused VM's QEMU and dir go in the background.
 */
export async function assertConsistent(dataDir: string, what: string): Promise<void> {
  let last = "";
  for (let i = 0; i < 40; i++) {
    const rows = await rowsOf(dataDir);
    const running = rows
      .filter((r) => r.status === "running")
      .map((r) => r.id)
      .sort();
    const recorded = rows.flatMap((r) => (r.snapshot ? [r.snapshot.snapshot_id] : [])).sort();
    const disk = onDisk(dataDir);
    const vmsDir = join(dataDir, "hostd", "vms");
    const pidIn = (name: string) => Number(readIf(join(vmsDir, name, "qemu.pid")).trim()) || 0;
    const rowPids = running.map(pidIn);
    const poolPids = readdirSync(vmsDir)
      .filter((n) => n.startsWith("_pool-"))
      .map(pidIn);
    const all = qemuPids([vmsDir]);
    const stray = all.filter((p) => !rowPids.includes(p) && !poolPids.includes(p));
    const problems = [
      JSON.stringify(disk.vms) !== JSON.stringify(running) && `VM dirs ${disk.vms} ≠ running rows ${running}`,
      JSON.stringify(disk.snaps) !== JSON.stringify(recorded) &&
        `snapshots ${disk.snaps} ≠ recorded ${recorded}`,
      disk.quarantined.length > 0 && `quarantined: ${disk.quarantined}`,
      stray.length > 0 && `QEMU of no running row: ${stray}`,
      rowPids.some((p) => !all.includes(p)) && `running rows whose QEMU is gone: ${running} ${rowPids}`,
    ].filter(Boolean);
    if (problems.length === 0) return;
    last = problems.join("; ");
    await sleep(250);
  }
  assert.fail(`${what}: ${last}`);
}

/** Writes `val` to the disk (/root/marker) and to memory (tmpfs /tmp/mem, and a process kept alive). */
export async function seed(s: ServerProc, key: string, id: string, val: string): Promise<void> {
  const put = await call(s.url, "PUT", `/v1/sandboxes/${id}/files?path=/root/marker`, {
    key,
    raw: val,
    headers: { "content-type": "application/octet-stream" },
  });
  assert.equal(put.status, 200, put.text);
  const script = `echo ${val} > /tmp/mem; sync; nohup sleep 1000000 >/dev/null 2>&1 & echo $! > /tmp/mem.pid`;
  const r = await call(s.url, "POST", `/v1/sandboxes/${id}/exec`, {
    key,
    body: { cmd: "sh", args: ["-c", script] },
  });
  assert.equal(r.json?.data?.result?.exit_code, 0, r.text);
}

/** The disk and memory `seed` wrote are intact in a running sandbox. */
export async function assertIntact(s: ServerProc, key: string, id: string, val: string): Promise<void> {
  const disk = await call(s.url, "GET", `/v1/sandboxes/${id}/files?path=/root/marker`, { key });
  assert.equal(disk.text, val, `${id}: disk marker`);
  const script = 'cat /tmp/mem; kill -0 "$(cat /tmp/mem.pid)" && echo alive';
  const r = await call(s.url, "POST", `/v1/sandboxes/${id}/exec`, {
    key,
    body: { cmd: "sh", args: ["-c", script] },
  });
  assert.equal(
    r.json?.data?.result?.stdout,
    `${val}\nalive\n`,
    `${id}: memory (tmpfs file and process): ${r.text}`,
  );
}
