/** Engine errors and host reasons as clients see them: catalog words only, the host's kept for the log. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError, HostdError, type HostdErrorCode } from "@createos-sandbox/protocol";
import { mapHostdError, publicHostId, publicReason } from "../hosterr.js";
import { TenantStreams } from "../tenant-streams.js";

/** What hosts say, with the details clients must not see. */
const HOST_WORDS: [HostdErrorCode, string][] = [
  ["not_found", "no running VM for sandbox sb-1 on this host"],
  ["conflict", "a VM for sandbox sb-1 already exists on this host"],
  ["capacity", "not enough free memory: 812 MiB free, 1280 MiB needed (/proc/meminfo)"],
  ["capacity", "not enough free disk on this host to create a sandbox: 1 MiB free on /var/lib/csb"],
  ["not_ready", "cannot read CA certificate /etc/ssl/x.pem: EACCES"],
  ["unreachable", "connect ECONNREFUSED /run/h2.sock"],
  ["unauthorized", "host daemon https://10.0.0.7:7070 answered 401"],
  [
    "agent_unreachable",
    "the guest agent did not answer within 10000 ms; see console.log in /var/lib/csb/hostd/vms/sb-1",
  ],
  ["busy", "buffered exec output on this sandbox is at its cap of 67108864 bytes"],
  ["too_large", "qemu-img: /var/lib/csb/hostd/vms/sb-1/disk.qcow2: file too large"],
];

test("engine errors map to catalog messages; the host's words only as hostDetail", () => {
  for (const [code, words] of HOST_WORDS) {
    const out = mapHostdError(new HostdError(code, words), { action: "exec in" });
    assert.ok(out instanceof ApiError, code);
    const seen = `${out.message} ${JSON.stringify(out.data ?? {})}`;
    assert.doesNotMatch(seen, /\/|MiB|ECONN|console\.log|qemu|10\.0\.0|\d{5,}/, `${code}: ${seen}`);
    assert.equal((out as { hostDetail?: string }).hostDetail, words);
  }
  const disk = mapHostdError(new HostdError("capacity", HOST_WORDS[3]![1])) as ApiError;
  assert.equal(disk.message, "no host capacity: not enough free disk on this host to create a sandbox");
  const other = new Error("boom");
  assert.equal(mapHostdError(other), other, "a non-engine error stays an internal error");
});

test("host reasons for /readyz and 503s are fixed phrases", () => {
  const raw = [
    "connecting: connect ENOENT /run/h2.sock",
    "host daemon failed to start: spawn /usr/bin/qemu-system-x86_64 -M microvm ENOENT",
    "default image devbox:1 failed to build: mmdebstrap --variant=minbase exited 1 in /root/.cache/x",
    "building default image devbox:1: rootfs",
    "accelerator probe failed: qemu-system-x86_64 -accel kvm: /dev/kvm: permission denied",
    "host daemon is unreachable (connect ECONNREFUSED 10.0.0.7:7070)",
    "not enough free memory (free_mib 123)",
  ];
  for (const r of raw) assert.doesNotMatch(publicReason(r), /\/(?!1)|qemu|mmdebstrap|ECONN|\d{3,}/, r);
  assert.equal(publicReason(raw[3]), "building default image devbox:1");
  assert.equal(publicReason(raw[2]), "default image devbox:1 failed to build (see the server log)");
  assert.equal(publicHostId("unix:/run/h2.sock", 1), "host 2");
  assert.equal(publicHostId("h1-a1b2c3", 0), "h1-a1b2c3");
});

test("tenant stream caps: streams and buffered bytes per tenant, released once", () => {
  const t = new TenantStreams({ maxStreamsPerTenant: 2, maxExecBufferMibPerTenant: 1 });
  const a = t.open("u1", 512 * 1024);
  assert.throws(() => t.open("u1", 768 * 1024), /buffered exec limit reached \(1 MiB/);
  const b = t.open("u1");
  assert.throws(() => t.open("u1"), /open stream limit reached \(2 per tenant/);
  t.open("u2").release();
  a.release();
  a.release();
  assert.deepEqual(t.usage("u1"), { streams: 1, bufferedBytes: 0 });
  b.release();
  assert.deepEqual(t.usage("u1"), { streams: 0, bufferedBytes: 0 });
});
