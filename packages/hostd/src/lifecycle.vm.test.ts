/**
 * The sandbox engine on real VMs (QEMU microvm; TCG on hosts without usable KVM): create, exec, files,
 * pause/resume, fork, destroy. VMs are reused across tests where that does not weaken a test, to keep
 * the suite's wall time reasonable on 2 cores.
 *
 *   npx tsc -b packages/hostd && node --test --test-concurrency=1 packages/hostd/dist/lifecycle.vm.test.js
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { HostEvent, SnapshotRef } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "./daemon.js";
import { procGone } from "./sys/index.js";
import {
  TEST_IMAGE,
  bufferStream,
  catalogNames,
  drain,
  hostFootprint,
  openOpts,
  ourSlots,
  run,
  sh,
  sha256,
  sleep,
  spec,
  tempDataDir,
} from "./testutil.js";

const dataDir = tempDataDir("life");
let d: LocalHostDaemon;

before(async () => {
  d = await LocalHostDaemon.open(openOpts(dataDir));
  // Builds the image (and, on the first create, its warm snapshot) when missing: slow only the first time.
  await d.ensureImage(TEST_IMAGE);
});

after(async () => {
  for (const v of await d.list()) await d.destroy(v.sandbox_id);
  await d.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe("create, exec and files", () => {
  let id = "";
  before(async () => {
    const s = spec({ envs: { SANDBOX_FOO: "bar baz" } });
    const rt = await d.create(s);
    id = s.sandbox_id;
    assert.equal(rt.sandbox_id, id);
    assert.match(rt.ip, /^10\.201\.\d+\.\d+$/);
    assert.ok(rt.spawn_ms > 0);
  });
  after(async () => {
    await d.destroy(id);
  });

  test("exec: stdout, stderr, exit codes, env, cwd, stdin", async () => {
    const r = await run(d, id, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual(r, { code: 3, stdout: "out\n", stderr: "err\n" });
    assert.equal((await run(d, id, ["printenv", "SANDBOX_FOO"])).stdout, "bar baz\n");
    assert.equal((await run(d, id, ["printenv", "X"], { env: { X: "per-exec" } })).stdout, "per-exec\n");
    assert.equal((await run(d, id, ["pwd"], { cwd: "/tmp" })).stdout, "/tmp\n");
    assert.equal((await run(d, id, ["cat"], { stdin: Buffer.from("from stdin") })).stdout, "from stdin");
    const missing = await d.exec(id, { argv: ["no-such-program-xyz"] });
    assert.equal(missing.exit_code, -1);
    assert.ok(missing.error);
    const ok = await d.exec(id, { argv: ["true"] });
    assert.equal(ok.exit_code, 0);
    assert.ok(ok.exec_ms > 0);
  });

  test("exec streams output as it is produced", async () => {
    const times: number[] = [];
    const t0 = Date.now();
    const r = await d.exec(
      id,
      { argv: ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.4; done"] },
      { onStdout: () => times.push(Date.now() - t0) },
    );
    assert.equal(r.exit_code, 0);
    assert.ok(times.length >= 2, `expected several chunks, got ${times.length}`);
    assert.ok((times.at(-1) ?? 0) - (times[0] ?? 0) >= 500, `chunks arrived together: ${times.join(",")}`);
  });

  test("guest sees its shape: vCPUs, RAM, root disk of disk_mib", async () => {
    assert.equal((await sh(d, id, "nproc")).trim(), "1");
    const memKb = Number(/MemTotal:\s+(\d+)/.exec(await sh(d, id, "cat /proc/meminfo"))?.[1]);
    assert.ok(memKb > 200 * 1024 && memKb <= 256 * 1024, `MemTotal ${memKb} kB`);
    const df = (await sh(d, id, "df -k / | tail -1")).trim().split(/\s+/);
    const sizeMib = Number(df[1]) / 1024;
    assert.ok(sizeMib > 2048 * 0.9 && sizeMib <= 2048, `root fs is ${sizeMib} MiB, want ~2048`);
  });

  test("100 MiB file round trip is byte-exact", async () => {
    const body = randomBytes(100 * 1024 * 1024);
    const w = await d.writeFile(id, "/root/big/blob.bin", bufferStream(body));
    assert.equal(w.bytes, body.length);
    const r = await d.readFile(id, "/root/big/blob.bin");
    assert.equal(r.stat.size, body.length);
    const back = await drain(r.body);
    assert.equal(back.length, body.length);
    assert.equal(sha256(back), sha256(body));
    assert.equal((await sh(d, id, "sha256sum /root/big/blob.bin")).split(" ")[0], sha256(body));
    await sh(d, id, "rm -rf /root/big");
    await assert.rejects(
      d.readFile(id, "/root/nope"),
      (e: Error & { code?: string }) => e.code === "file_not_found",
    );
  });

  test("host reaches the guest on its sandbox address", async () => {
    const rt = (await d.list()).find((v) => v.sandbox_id === id);
    assert.ok(rt);
    await sh(
      d,
      id,
      "nohup python3 -c \"import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',8123));s.listen();c,_=s.accept();c.sendall(b'hi from guest');c.close()\" >/dev/null 2>&1 &",
    );
    let got = "";
    for (let i = 0; i < 50 && !got; i++) {
      got = await new Promise<string>((resolve) => {
        const s = connect({ host: rt.ip, port: 8123 });
        let buf = "";
        s.on("data", (c) => {
          buf += c.toString();
        });
        s.on("end", () => resolve(buf));
        s.on("error", () => resolve(""));
        s.setTimeout(3000, () => {
          s.destroy();
          resolve("");
        });
      });
      if (!got) await sleep(200);
    }
    assert.equal(got, "hi from guest");
  });

  test("connectTcp reaches an in-guest port", async () => {
    await sh(
      d,
      id,
      "nohup python3 -c \"import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',8124));s.listen();c,_=s.accept();c.sendall(c.recv(100).upper());c.close()\" >/dev/null 2>&1 &",
    );
    let reply = "";
    for (let i = 0; i < 30 && !reply; i++) {
      try {
        const s = await d.connectTcp(id, 8124);
        s.end("ping");
        reply = (await drain(s)).toString();
      } catch {
        await sleep(200);
      }
    }
    assert.equal(reply, "PING");
  });
  test("resizeDisk grows the root filesystem live", async () => {
    await d.resizeDisk(id, 3072);
    const df = (await sh(d, id, "df -k / | tail -1")).trim().split(/\s+/);
    const sizeMib = Number(df[1]) / 1024;
    assert.ok(sizeMib > 3072 * 0.9 && sizeMib <= 3072, `root fs is ${sizeMib} MiB after resize, want ~3072`);
    await assert.rejects(d.resizeDisk(id, 1024), (e: Error & { code?: string }) => e.code === "bad_request");
  });

  test("events: self-signal from the guest, activity on exec", async () => {
    const events: HostEvent[] = [];
    const off = d.onEvent((e) => events.push(e));
    try {
      await sh(d, id, "echo park > /run/self");
      for (let i = 0; i < 50 && !events.some((e) => e.type === "self"); i++) await sleep(100);
      const self = events.find((e) => e.type === "self");
      assert.deepEqual(self && { type: self.type, sandbox_id: self.sandbox_id, action: self.action }, {
        type: "self",
        sandbox_id: id,
        action: "pause",
      });
      assert.ok(events.some((e) => e.type === "activity" && e.sandbox_id === id));
    } finally {
      off();
    }
  });

  test("info reports the accelerator, the VM count and the built images", async () => {
    const info = await d.info();
    assert.ok(info.accel === "tcg" || info.accel === "kvm");
    assert.ok(info.vm_count >= 1);
    assert.ok(info.rootfses.includes(TEST_IMAGE));
    assert.ok(info.free_mib > 0);
    assert.equal(info.not_ready_reason, undefined);
  });
});

describe("pause and resume", () => {
  test("a running process and a tmpfs file survive; the clock is right after a resume", async () => {
    const s = spec();
    await d.create(s);
    const id = s.sandbox_id;
    try {
      await sh(d, id, "echo kept-in-tmpfs > /tmp/keep.txt");
      await sh(
        d,
        id,
        "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 & echo $! > /tmp/counter.pid",
      );
      await sleep(500);
      const pid = (await sh(d, id, "cat /tmp/counter.pid")).trim();
      const before = Number((await sh(d, id, "cat /tmp/counter")).trim());
      assert.ok(before > 0);

      const snap = await d.pause(id);
      assert.equal(snap.sandbox_id, id);
      assert.ok(snap.size_bytes > 0);
      assert.ok(snap.pause_ms > 0);
      assert.equal(
        (await d.list()).some((v) => v.sandbox_id === id),
        false,
      );
      await assert.rejects(
        d.exec(id, { argv: ["true"] }),
        (e: Error & { code?: string }) => e.code === "not_found",
      );
      await sleep(3500);

      const rt = await d.resume(snap, s);
      assert.equal(rt.boot, "resume");
      assert.equal((await sh(d, id, "cat /tmp/keep.txt")).trim(), "kept-in-tmpfs");
      assert.equal((await run(d, id, ["kill", "-0", pid])).code, 0, "counter process is gone after resume");
      const after1 = Number((await sh(d, id, "cat /tmp/counter")).trim());
      await sleep(600);
      const after2 = Number((await sh(d, id, "cat /tmp/counter")).trim());
      assert.ok(after1 >= before, `counter went back: ${before} → ${after1}`);
      assert.ok(after2 > after1, `counter stopped: ${after1} → ${after2}`);

      const guest = Number((await sh(d, id, "date +%s.%N")).trim());
      const host = Date.now() / 1000;
      assert.ok(
        Math.abs(guest - host) < 1,
        `guest clock off by ${(guest - host).toFixed(3)} s after a 3.5 s pause`,
      );

      // The snapshot was consumed.
      await assert.rejects(d.resume(snap, spec()), (e: Error & { code?: string }) => e.code === "not_found");

      // Pause again: a resumed VM pauses like a fresh one.
      const snap2 = await d.pause(id);
      await d.resume(snap2, s);
      assert.equal((await sh(d, id, "cat /tmp/keep.txt")).trim(), "kept-in-tmpfs");
    } finally {
      await d.destroy(id);
    }
  });
});

describe("fork", () => {
  test("three forks diverge independently and differ in hostname, IP and random state", async () => {
    const p = spec({ hostname: "parent" });
    await d.create(p);
    await sh(d, p.sandbox_id, "echo parent-data > /root/shared.txt; echo tmp > /tmp/t.txt");
    const snap: SnapshotRef = await d.pause(p.sandbox_id);

    const kids = [1, 2, 3].map((i) => spec({ hostname: `child-${i}` }));
    const rts = await Promise.all(kids.map((k) => d.fork(snap, k)));
    try {
      const ips = new Set<string>();
      const rand = new Set<string>();
      for (const [i, k] of kids.entries()) {
        const rt = rts[i]?.runtime;
        assert.ok(rt);
        assert.equal(rt.boot, "fork");
        ips.add(rt.ip);
        assert.equal((await sh(d, k.sandbox_id, "hostname")).trim(), `child-${i + 1}`);
        assert.equal(
          (await sh(d, k.sandbox_id, "cat /root/shared.txt /tmp/t.txt")).trim(),
          "parent-data\ntmp",
        );
        rand.add(await sh(d, k.sandbox_id, "head -c16 /dev/urandom | od -An -tx1"));
        await sh(d, k.sandbox_id, `echo only-${k.sandbox_id} > /root/own.txt`);
      }
      assert.equal(ips.size, 3);
      assert.equal(rand.size, 3);
      for (const k of kids) {
        assert.equal((await sh(d, k.sandbox_id, "cat /root/own.txt")).trim(), `only-${k.sandbox_id}`);
      }
      // The parent's snapshot is untouched by its children and still resumable (after a start_paused fork too).
      const paused = await d.fork(snap, spec({ hostname: "child-4" }), { start_paused: true });
      assert.ok(paused.snapshot && !paused.runtime);
      await d.resume(snap, p);
      const r = await run(d, p.sandbox_id, ["cat", "/root/own.txt"]);
      assert.notEqual(r.code, 0);
      assert.equal((await sh(d, p.sandbox_id, "cat /root/shared.txt")).trim(), "parent-data");
      assert.equal((await sh(d, p.sandbox_id, "hostname")).trim(), "parent");
      // The start_paused child resumes into its own identity.
      const c4 = spec({ hostname: "child-4", sandbox_id: paused.snapshot.sandbox_id });
      const snap4 = paused.snapshot;
      await d.resume(snap4, c4);
      assert.equal((await sh(d, c4.sandbox_id, "cat /root/shared.txt")).trim(), "parent-data");
      await d.destroy(c4.sandbox_id);
    } finally {
      for (const k of kids) await d.destroy(k.sandbox_id);
      await d.destroy(p.sandbox_id);
      await d.deleteSnapshot(snap);
    }
  });
});

describe("a VM that dies", () => {
  test("is reported as vm_exited and cleaned up", async () => {
    const s = spec();
    await d.create(s);
    const events: HostEvent[] = [];
    const off = d.onEvent((e) => events.push(e));
    try {
      const pid = (await d.list()).find((v) => v.sandbox_id === s.sandbox_id)?.pid;
      assert.ok(pid);
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 100 && !events.some((e) => e.type === "vm_exited"); i++) await sleep(50);
      assert.ok(events.some((e) => e.type === "vm_exited" && e.sandbox_id === s.sandbox_id));
      assert.equal(
        (await d.list()).some((v) => v.sandbox_id === s.sandbox_id),
        false,
      );
      await assert.rejects(
        d.exec(s.sandbox_id, { argv: ["true"] }),
        (e: Error & { code?: string }) => e.code === "not_found",
      );
    } finally {
      off();
      await d.destroy(s.sandbox_id);
    }
  });
});

describe("destroy", () => {
  test("of a VM still being created waits for the create, then the VM is gone", async () => {
    const s = spec();
    let settled = false;
    const created = d.create(s).finally(() => {
      settled = true;
    });
    // The create has written its record (it is under way, no VM entry yet): destroy now.
    const dir = join(dataDir, "hostd", "vms", s.sandbox_id);
    while (!existsSync(dir) && !settled) await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, "the destroy must come while the create is in progress");
    await d.destroy(s.sandbox_id);
    assert.equal(settled, true, "destroy returned before the create it waited for");
    await created;
    assert.equal(
      (await d.list()).some((v) => v.sandbox_id === s.sandbox_id),
      false,
      "still listed",
    );
    assert.equal(existsSync(dir), false, "its record is gone");
    await assert.rejects(
      d.exec(s.sandbox_id, { argv: ["true"] }),
      (e: Error & { code?: string }) => e.code === "not_found",
    );
  });

  test("leaves nothing behind: processes, namespaces, links, routes, sockets, files", async () => {
    const s = spec();
    await d.create(s);
    const pid = (await d.list()).find((v) => v.sandbox_id === s.sandbox_id)?.pid;
    assert.ok(pid);
    const snapVm = spec();
    await d.create(snapVm);
    // Every network slot this daemon holds: its VMs (pooled ones too) and its namespace pool. Other
    // daemons on this host (other test suites) have their own slots, so only ours are checked.
    const slots = ourSlots(dataDir);
    assert.ok(slots.size >= 2);
    const snap = await d.pause(snapVm.sandbox_id);
    await d.destroy(s.sandbox_id);
    await d.destroy(s.sandbox_id); // idempotent
    await d.deleteSnapshot(snap);
    await d.deleteSnapshot(snap);
    await d.destroy("never-existed");
    for (const sl of ourSlots(dataDir)) slots.add(sl);
    await d.close();
    const now = hostFootprint(dataDir);
    assert.deepEqual(now.qemu, [], "QEMU processes left");
    assert.ok(procGone(pid), `QEMU ${pid} still running`);
    assert.deepEqual(now.vmFiles, [], "VM dirs (with their sockets) left");
    for (const sl of slots) {
      assert.ok(!now.netns.includes(`csb-${sl}`), `namespace csb-${sl} left`);
      assert.ok(!now.links.includes(`csbv${sl}`), `veth csbv${sl} left`);
      assert.ok(
        !now.routes.some((r) => new RegExp(`dev csbv${sl}( |$)`).test(r)),
        `route via csbv${sl} left`,
      );
    }
    // An XFS image store is unmounted once close() left no VM dir on it: seen again through a new daemon
    // (whose start deletes no snapshot and no layer).
    d = await LocalHostDaemon.open(openOpts(dataDir));
    assert.deepEqual(readdirSync(`${dataDir}/hostd/snapshots`), []);
    assert.deepEqual(readdirSync(`${dataDir}/hostd/layers`), []);
  });
});

describe("catalog", () => {
  for (const name of catalogNames()) {
    test(`create from ${name}`, { timeout: 3_600_000 }, async () => {
      await d.ensureImage(name);
      const s = spec({ image: name });
      const rt = await d.create(s);
      try {
        assert.ok(rt.spawn_ms > 0);
        const osr = await sh(d, s.sandbox_id, "cat /etc/os-release");
        assert.match(osr, /Debian/);
        assert.equal((await sh(d, s.sandbox_id, "echo ok")).trim(), "ok");
      } finally {
        await d.destroy(s.sandbox_id);
      }
    });
  }
});
