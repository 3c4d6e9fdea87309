/**
 * One conformance suite for every HostDaemon implementation (in-process, remote over HTTP): each test
 * checks the contract documented in packages/protocol/src/hostd.ts, through the interface only.
 *
 * VM boots are slow under TCG, so one VM (A) carries the I/O tests, is then paused, forked twice and
 * resumed: four QEMU starts in all. Tests run in order and later ones use what earlier ones left.
 * Everything the suite creates is destroyed in `after`, which also checks that none of those VMs is
 * listed and none of their QEMU processes is left (pids from `list()`, looked up in this machine's /proc:
 * a remote daemon under test runs here too).
 *
 * Usage, in a *.test.ts file: `conformance("local", async () => ({ daemon, close }))`.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import type { HostDaemon, HostEvent, SnapshotRef, VmRuntime, VmSpec } from "@createos-sandbox/protocol";
import { procCmdline, procGone } from "../sys/index.js";
import { TEST_IMAGE, run, sh, spec } from "../testutil.js";
import { rejectsWith, waitFor, within } from "./guest.js";
import * as io from "./io.js";

export interface Opened {
  daemon: HostDaemon;
  close(): Promise<void>;
}

const IPV4 = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;
const MIB = 1024 * 1024;
const T = { timeout: 240_000 };

function qemuGone(pid: number): boolean {
  return procGone(pid) || !(procCmdline(pid)?.[0] ?? "").includes("qemu");
}

export function conformance(label: string, open: () => Promise<Opened>): void {
  describe(`HostDaemon conformance: ${label}`, () => {
    let h: Opened | undefined;
    let d: HostDaemon;
    const tag = randomBytes(3).toString("hex");
    const A: VmSpec = spec({
      hostname: `conf-a-${tag}`,
      envs: { CONF_ENV: "sandbox value", CONF_OVER: "sandbox" },
    });
    const kids = [1, 2].map((i) => spec({ hostname: `conf-kid${i}-${tag}` }));
    let rtA: VmRuntime;
    let snap: SnapshotRef | undefined;
    /** Every sandbox id the suite started a VM for. */
    const ids = new Set<string>([A.sandbox_id, ...kids.map((k) => k.sandbox_id)]);
    /** QEMU pid of each of our VMs, as `list()` reported it. */
    const pids = new Map<string, number[]>();

    /** An operation that must fail: should it succeed, its VM is still destroyed in `after`. */
    function leakGuard<T>(id: string, p: Promise<T>): Promise<T> {
      return p.then((v) => {
        ids.add(id);
        return v;
      });
    }
    async function listed(id: string) {
      return (await d.list()).find((v) => v.sandbox_id === id);
    }
    async function track(id: string, rt: VmRuntime): Promise<number> {
      const v = await listed(id);
      assert.ok(v, `${id} is running but not in list()`);
      assert.equal(v.ip, rt.ip);
      assert.ok(v.pid > 0, `pid ${v.pid}`);
      pids.set(id, [...(pids.get(id) ?? []), v.pid]);
      return v.pid;
    }

    before(
      async () => {
        h = await open();
        d = h.daemon;
        await d.ensureImage(TEST_IMAGE);
        rtA = await d.create(A);
      },
      { timeout: 1_800_000 },
    );

    after(
      async () => {
        if (!h) return; // open() failed: nothing was created
        try {
          for (const id of ids) await d.destroy(id);
          if (snap) await d.deleteSnapshot(snap);
          const left = (await d.list()).filter((v) => ids.has(v.sandbox_id)).map((v) => v.sandbox_id);
          assert.deepEqual(left, [], "VMs of this suite still listed after destroy");
          const all = [...pids.values()].flat();
          await waitFor(`QEMU processes ${all.join(",")} to exit`, () => all.every(qemuGone), 10_000);
        } finally {
          await h.close();
        }
      },
      { timeout: 300_000 },
    );

    test("create: the runtime of the new VM; list() shows it", T, async () => {
      assert.equal(rtA.sandbox_id, A.sandbox_id);
      assert.ok(rtA.boot === "warm" || rtA.boot === "cold", `boot ${rtA.boot}`);
      assert.match(rtA.ip, IPV4);
      assert.ok(rtA.spawn_ms > 0, `spawn_ms ${rtA.spawn_ms}`);
      await track(A.sandbox_id, rtA);
      assert.equal((await sh(d, A.sandbox_id, "hostname")).trim(), A.hostname);
    });

    test("info and images: a ready host with the test image built", T, async () => {
      const info = await d.info();
      assert.ok(typeof info.id === "string" && info.id.length > 0);
      assert.equal(info.status, "active");
      assert.ok(info.accel === "kvm" || info.accel === "tcg", `accel ${info.accel}`);
      assert.ok(info.free_mib > 0, `free_mib ${info.free_mib}`);
      assert.ok(info.vm_count >= 1, `vm_count ${info.vm_count} with A running`);
      assert.equal(info.not_ready_reason, undefined);
      const imgs = await d.images();
      assert.equal(new Set(imgs.map((i) => i.name)).size, imgs.length, "image names repeat");
      assert.equal(imgs.find((i) => i.name === TEST_IMAGE)?.built, true);
      assert.ok(imgs.every((i) => typeof i.description === "string"));
      assert.ok(imgs.filter((i) => i.default).length <= 1, "more than one default image");
      const built = imgs.filter((i) => i.built).map((i) => i.name);
      assert.deepEqual([...info.rootfses].sort(), built.sort(), "info.rootfses is not the built images");
    });

    test("create: invalid specs → bad_request, a taken id → conflict; nothing is started", T, async () => {
      const bad: [string, Partial<VmSpec>][] = [
        ["vcpu 0", { vcpu: 0 }],
        ["fractional vcpu", { vcpu: 1.5 }],
        ["mem_mib 1", { mem_mib: 1 }],
        ["disk_mib 0", { disk_mib: 0 }],
        ["a hostname with spaces", { hostname: "not a hostname" }],
        ["a sandbox id with a path", { sandbox_id: "../conf-escape" }],
        ["an empty sandbox id", { sandbox_id: "", hostname: "conf-empty-id" }],
        ["an unknown image", { image: "conf-no-such-image:0" }],
      ];
      for (const [what, over] of bad) {
        const s = spec(over);
        await rejectsWith(leakGuard(s.sandbox_id, d.create(s)), "bad_request", `create with ${what}`);
      }
      await rejectsWith(d.create({ ...A, hostname: "other" }), "conflict", "create with a running id");
      const running = (await d.list()).map((v) => v.sandbox_id);
      for (const [, over] of bad)
        if (over.sandbox_id !== undefined)
          assert.ok(!running.includes(over.sandbox_id), `${over.sandbox_id} is running`);
      assert.equal((await sh(d, A.sandbox_id, "hostname")).trim(), A.hostname, "the conflict touched A");
    });

    test("operations on an unknown sandbox or snapshot → not_found", T, async () => {
      const ghost = `conf-ghost-${tag}`;
      const ops: [string, () => Promise<unknown>][] = [
        ["exec", () => d.exec(ghost, { argv: ["true"] })],
        ["openPty", () => d.openPty(ghost, { rows: 24, cols: 80 })],
        ["readFile", () => d.readFile(ghost, "/etc/hostname")],
        ["writeFile", () => d.writeFile(ghost, "/tmp/x", Readable.from([Buffer.from("x")]))],
        ["connectTcp", () => d.connectTcp(ghost, 22)],
        ["pause", () => d.pause(ghost)],
        ["resizeDisk", () => d.resizeDisk(ghost, 4096)],
        ["setEgress", () => d.setEgress(ghost, ["pypi.org"])],
        ["takeNetUsage", () => d.takeNetUsage(ghost)],
        ["setBandwidth", () => d.setBandwidth(ghost, 1024)],
      ];
      for (const [what, op] of ops) await rejectsWith(op(), "not_found", `${what} on an unknown sandbox`);
      const ref: SnapshotRef = {
        snapshot_id: `snap-conf-ghost-${tag}`,
        sandbox_id: ghost,
        mem_mib: A.mem_mib,
        vcpu: A.vcpu,
        disk_mib: A.disk_mib,
        image: A.image,
        size_bytes: 1,
        pause_ms: 1,
      };
      const s = spec();
      const resumed = d.resume(ref, { ...s, sandbox_id: ghost });
      await rejectsWith(leakGuard(ghost, resumed), "not_found", "resume of an unknown snapshot");
      await rejectsWith(leakGuard(s.sandbox_id, d.fork(ref, s)), "not_found", "fork of an unknown snapshot");
    });

    test("exec: exit codes, stdout and stderr apart, env, cwd", T, () => io.checkExec(d, A.sandbox_id));
    test("exec: stdin as a Buffer, as a Readable, absent", T, () => io.checkStdin(d, A.sandbox_id));
    test("exec: a command that cannot start → error, exit_code -1", T, () =>
      io.checkStartFailure(d, A.sandbox_id),
    );
    test("exec: aborting the signal kills the process group promptly", T, () =>
      io.checkCancel(d, A.sandbox_id),
    );
    test("files: binary round trip with mode, parents created, missing → file_not_found", T, () =>
      io.checkFiles(d, A.sandbox_id),
    );
    test("pty: input, output, resize, signal, exit code", T, () => io.checkPty(d, A.sandbox_id));
    test("tunnel: bytes both ways, half-close from either side", T, () => io.checkTunnel(d, A.sandbox_id));
    test("backpressure: an unread tunnel blocks the guest writer; then every byte arrives", T, () =>
      io.checkBackpressure(d, A.sandbox_id),
    );

    test("events: a guest self-signal reaches every listener; unsubscribed ones get no more", T, async () => {
      const first: HostEvent[] = [];
      const second: HostEvent[] = [];
      const offFirst = d.onEvent((e) => first.push(e));
      const offSecond = d.onEvent((e) => second.push(e));
      type SelfEvent = Extract<HostEvent, { type: "self" }>;
      const selfOf = (es: HostEvent[], reason: string) =>
        es.find(
          (e): e is SelfEvent => e.type === "self" && e.sandbox_id === A.sandbox_id && e.reason === reason,
        );
      try {
        await sh(d, A.sandbox_id, `echo park conf-1-${tag} > /run/self`);
        await waitFor(
          "the first self event",
          () => !!selfOf(first, `conf-1-${tag}`) && !!selfOf(second, `conf-1-${tag}`),
        );
        assert.deepEqual(selfOf(first, `conf-1-${tag}`), {
          type: "self",
          sandbox_id: A.sandbox_id,
          action: "pause",
          reason: `conf-1-${tag}`,
        });
        offFirst();
        await sh(d, A.sandbox_id, `echo retire conf-2-${tag} > /run/self`);
        await waitFor("the second self event", () => !!selfOf(second, `conf-2-${tag}`));
        assert.equal(selfOf(second, `conf-2-${tag}`)?.action, "delete");
        assert.equal(selfOf(first, `conf-2-${tag}`), undefined, "an unsubscribed listener was called");
      } finally {
        offFirst();
        offSecond();
      }
    });

    test("pause: a sane snapshot ref; the VM is no longer on the host", T, async () => {
      const id = A.sandbox_id;
      await sh(
        d,
        id,
        "mkdir -p /root/keep && echo on-disk > /root/keep/disk.txt && echo in-tmpfs > /tmp/keep.txt",
      );
      const [pid] = pids.get(id) ?? [];
      assert.ok(pid);
      snap = await d.pause(id);
      assert.ok(typeof snap.snapshot_id === "string" && snap.snapshot_id.length > 0);
      const { sandbox_id, mem_mib, vcpu, disk_mib, image, size_bytes, pause_ms } = snap;
      assert.deepEqual(
        { sandbox_id, mem_mib, vcpu, disk_mib, image },
        { sandbox_id: id, mem_mib: A.mem_mib, vcpu: A.vcpu, disk_mib: A.disk_mib, image: A.image },
      );
      assert.ok(size_bytes > MIB && size_bytes < (A.mem_mib + A.disk_mib) * MIB, `size_bytes ${size_bytes}`);
      assert.ok(pause_ms > 0, `pause_ms ${pause_ms}`);
      assert.equal(await listed(id), undefined, "a paused VM is still listed");
      await waitFor(`QEMU ${pid} of the paused VM to exit`, () => qemuGone(pid));
      // Paused, the sandbox is a snapshot: the host has no VM by that id.
      await rejectsWith(d.exec(id, { argv: ["true"] }), "not_found", "exec on a paused VM");
      await rejectsWith(d.readFile(id, "/root/keep/disk.txt"), "not_found", "readFile on a paused VM");
      await rejectsWith(d.pause(id), "not_found", "pause of a paused VM");
    });

    test(
      "fork twice at once: children with their own hostname and address, the parent's files",
      T,
      async () => {
        assert.ok(snap);
        const parent = snap;
        const res = await Promise.all(kids.map((k) => d.fork(parent, k)));
        const ips = new Set<string>();
        for (const [i, k] of kids.entries()) {
          const rt = res[i]?.runtime;
          assert.ok(rt, `fork ${i} returned no runtime`);
          assert.equal(res[i]?.snapshot, undefined);
          assert.equal(rt.sandbox_id, k.sandbox_id);
          assert.equal(rt.boot, "fork");
          assert.match(rt.ip, IPV4);
          ips.add(rt.ip);
          await track(k.sandbox_id, rt);
        }
        assert.equal(ips.size, 2, "the children share an address");
        for (const k of kids) {
          assert.equal((await sh(d, k.sandbox_id, "hostname")).trim(), k.hostname);
          assert.equal(
            await sh(d, k.sandbox_id, "cat /root/keep/disk.txt /tmp/keep.txt"),
            "on-disk\nin-tmpfs\n",
          );
          await sh(d, k.sandbox_id, `echo ${k.sandbox_id} > /root/keep/own.txt`);
        }
        for (const k of kids)
          assert.equal((await sh(d, k.sandbox_id, "cat /root/keep/own.txt")).trim(), k.sandbox_id);
      },
    );

    test("resume: the parent comes back with its files; the snapshot is consumed", T, async () => {
      assert.ok(snap);
      const rt = await d.resume(snap, A);
      assert.equal(rt.sandbox_id, A.sandbox_id);
      assert.equal(rt.boot, "resume");
      await track(A.sandbox_id, rt);
      assert.equal(await sh(d, A.sandbox_id, "cat /root/keep/disk.txt /tmp/keep.txt"), "on-disk\nin-tmpfs\n");
      assert.equal((await sh(d, A.sandbox_id, "hostname")).trim(), A.hostname);
      assert.notEqual(
        (await run(d, A.sandbox_id, ["test", "-e", "/root/keep/own.txt"])).code,
        0,
        "a child's write reached the parent",
      );
      const late = spec();
      await rejectsWith(
        leakGuard(late.sandbox_id, d.fork(snap, late)),
        "not_found",
        "fork of a consumed snapshot",
      );
    });

    test("events: a VM whose QEMU dies unasked → vm_exited; it is no longer listed", T, async () => {
      const k = kids[1];
      assert.ok(k);
      const [pid] = pids.get(k.sandbox_id) ?? [];
      assert.ok(pid);
      const events: HostEvent[] = [];
      const off = d.onEvent((e) => events.push(e));
      try {
        // The guest has no way to end its own VM (no sysrq, no reboot tool), so its QEMU is killed here.
        assert.ok(!qemuGone(pid), `pid ${pid} of ${k.sandbox_id} is no QEMU process`);
        process.kill(pid, "SIGKILL");
        const exited = () => events.find((e) => e.type === "vm_exited" && e.sandbox_id === k.sandbox_id);
        await waitFor("vm_exited", () => !!exited(), 60_000);
        const e = exited();
        assert.ok(e?.type === "vm_exited" && typeof e.reason === "string", JSON.stringify(e));
        assert.equal(await listed(k.sandbox_id), undefined, "an exited VM is still listed");
        await rejectsWith(d.exec(k.sandbox_id, { argv: ["true"] }), "not_found", "exec on an exited VM");
      } finally {
        off();
      }
    });

    test("destroy: idempotent, for running, exited and unknown VMs; QEMU is gone", T, async () => {
      const [k1, k2] = kids;
      assert.ok(k1 && k2);
      for (const id of [k1.sandbox_id, k1.sandbox_id, k2.sandbox_id, k2.sandbox_id, `conf-never-${tag}`])
        await within(d.destroy(id), 60_000, `destroy ${id}`);
      for (const k of kids) {
        assert.equal(await listed(k.sandbox_id), undefined, `${k.sandbox_id} is listed after destroy`);
        await rejectsWith(d.exec(k.sandbox_id, { argv: ["true"] }), "not_found", "exec after destroy");
        const ps = pids.get(k.sandbox_id) ?? [];
        assert.equal(ps.length, 1);
        await waitFor(`QEMU of ${k.sandbox_id} to exit`, () => ps.every(qemuGone));
      }
      assert.equal(
        (await sh(d, A.sandbox_id, "echo alive")).trim(),
        "alive",
        "destroying the children hit A",
      );
    });
  });
}
