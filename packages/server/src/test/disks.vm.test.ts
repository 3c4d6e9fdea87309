/**
 * S3 disks end to end: the seed recipe (how-to-disks-networks-templates §1) through the published SDK,
 * verbatim apart from the import and the values it reads from the environment, against a real S3 server
 * (s3rver behind a SigV4-checking front) on a test host: a namespace of its own owning 10.254.54.1, routed
 * from the root namespace only. Then what the recipe does not show: a second path with sub_path, the data
 * from a second sandbox and from the S3 API itself, pause/resume, delete while attached, a bucket deleted
 * under a live mount, a search for the secret key in the guest (files, s3fs's memory, the mount's traffic),
 * the responses, the logs and the database; and the seed's CLI lines (cli-sandboxes, S3 disks).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { MEM_PY, WIRE_PY, cliAs, pyIn as pyAt } from "./disks-guest.js";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, call, cleanup } from "./helpers.js";

const S3_NS = "csbt-h21s3";
const S3_LINK = "csbt-h21s";
const S3_IP = "10.254.54.1";
const S3_PORT = 9000;
const ENDPOINT = `http://${S3_IP}:${S3_PORT}`;
const s3test = fileURLToPath(new URL("../../../hostd/dist/disks/s3test.js", import.meta.url));
const SDK = "@nodeops-createos/sandbox";

// biome-ignore lint/suspicious/noExplicitAny: the published SDK's types are not part of the server's build
let createClient: any;
// biome-ignore lint/suspicious/noExplicitAny: see above
let keys: any;
let s: ServerProc;
let s3: ChildProcess;
const ipCmd = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8", stdio: "pipe" });

function s3Down(): void {
  for (const args of [
    ["link", "del", S3_LINK],
    ["netns", "del", S3_NS],
  ]) {
    try {
      ipCmd(...args);
    } catch {
      // absent
    }
  }
}

/** A call to the test S3 server from the root namespace, signed with the real keys (or not). */
// biome-ignore lint/suspicious/noExplicitAny: the helper module is loaded at run time
let s3Call: any;

before(async () => {
  s3Down();
  const setup: string[][] = [
    ["netns", "add", S3_NS],
    ["link", "add", S3_LINK, "type", "veth", "peer", "name", "eth0", "netns", S3_NS],
    ["addr", "add", "10.254.54.2/30", "dev", S3_LINK],
    ["link", "set", S3_LINK, "up"],
    ...[
      ["addr", "add", `${S3_IP}/30`, "dev", "eth0"],
      ["link", "set", "eth0", "up"],
      ["link", "set", "lo", "up"],
    ].map((c) => ["-n", S3_NS, ...c]),
  ];
  for (const c of setup) ipCmd(...c);
  const helper = await import(s3test);
  keys = helper.S3_KEYS;
  s3Call = helper.s3Call;
  const script = `const m = await import(${JSON.stringify(s3test)}); await m.startS3(${JSON.stringify(S3_IP)}, ["data", "my-bucket"], ${S3_PORT}); console.log("ready");`;
  s3 = spawn("ip", ["netns", "exec", S3_NS, process.execPath, "--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    s3.stdout!.on("data", (c: Buffer) => c.toString().includes("ready") && resolve());
    s3.once("exit", (code) => reject(new Error(`s3 server exited ${code}`)));
  });
  ({ createClient } = await import(SDK));
  // The test S3 host is private (10.254.54.1): listed, as an operator lists a LAN endpoint (outbound.ts).
  s = await startEngineServer({ CREATEOS_SANDBOX_PRIVATE_EGRESS: `${S3_IP}/32` });
  process.env.CREATEOS_SANDBOX_API_KEY = s.adminKey;
  process.env.CREATEOS_SANDBOX_BASE_URL = s.url;
  process.env.S3_BUCKET = "data";
  process.env.S3_ENDPOINT = ENDPOINT;
  process.env.S3_ACCESS_KEY = keys.access_key;
  process.env.S3_SECRET_KEY = keys.secret_key;
});
after(async () => {
  if (s) await destroyAll(s, [s.adminKey]);
  await s?.stop();
  s3?.kill();
  s3Down();
  if (s) cleanup(s.dataDir);
});

const out: string[] = [];
const console = {
  log: (...a: unknown[]) => out.push(a.map(String).join(" ")),
  warn: (..._a: unknown[]) => {},
};

// biome-ignore lint/suspicious/noExplicitAny: SDK handle
async function sh(sandbox: any, script: string): Promise<string> {
  const r = await sandbox.runCommand("sh", ["-c", script]);
  assert.equal(r.result.exit_code, 0, `${script}: ${r.result.stderr}`);
  return r.result.stdout;
}

const pyIn = (id: string, code: string, args: string[], stdin: string) =>
  pyAt(s.url, s.adminKey, id, code, args, stdin);

/** Like sh() with stdin, through the REST exec (the published SDK's runCommand sends none). */
async function shIn(id: string, script: string, stdin: string): Promise<string> {
  const r = await call(s.url, "POST", `/v1/sandboxes/${id}/exec`, {
    key: s.adminKey,
    body: { cmd: "sh", args: ["-c", script], stdin },
  });
  assert.equal(r.status, 200, r.text);
  return r.json.data.result.stdout;
}

test(
  "the seed recipe and CLI lines, then sub_path, a second sandbox, the S3 API, pause/resume, a deleted bucket and no key in the guest",
  { timeout: 30 * 60_000 },
  async () => {
    // Registration checks the bucket on the test host: refused keys, a missing bucket, nothing listening.
    const reg = (
      name: string,
      config: object,
      credentials = { access_key: keys.access_key, secret_key: keys.secret_key },
    ) =>
      call(s.url, "POST", "/v1/disks", { key: s.adminKey, body: { name, kind: "s3", config, credentials } });
    const base = { bucket: "data", endpoint: ENDPOINT, use_path_style: true };
    const badKey = await reg("bad", base, { access_key: keys.access_key, secret_key: "wrong" });
    assert.match(badKey.json.data.credentials, /SignatureDoesNotMatch/);
    const noBucket = await reg("bad", { ...base, bucket: "absent" });
    assert.match(noBucket.json.data["config.bucket"], /no bucket absent/);
    const closed = await reg("bad", { ...base, endpoint: `http://${S3_IP}:9001` });
    assert.match(closed.json.data["config.endpoint"], /ECONNREFUSED/);
    assert.deepEqual([badKey.status, noBucket.status, closed.status], [400, 400, 400]);
    const client = createClient();
    // The recipe's body, verbatim from here to its end (its step 5 runs at the end of this test instead,
    // once the assertions that need the registration are done).
    const disk = await client.disks.create({
      name: "my-data", // ^[a-z0-9][a-z0-9-]{0,62}$
      kind: "s3",
      config: {
        bucket: process.env.S3_BUCKET!,
        endpoint: process.env.S3_ENDPOINT!,
        region: process.env.S3_REGION, // optional
        use_path_style: true, // MinIO / R2 with custom domain
      },
      credentials: {
        access_key: process.env.S3_ACCESS_KEY!,
        secret_key: process.env.S3_SECRET_KEY!,
      },
    });
    const DISK_ID = disk.id; // "disk_01abc…"
    const MOUNT = "/mnt/data";
    const sandbox = await client.createSandbox({
      shape: "s-2vcpu-2gb",
      rootfs: "devbox:1",
      disks: [{ disk_id: DISK_ID, mount_path: MOUNT }],
    });
    let second: typeof sandbox | undefined;
    try {
      const views = await sandbox.listDisks();
      assert.equal(views.length, 1);
      assert.equal(views[0].mount_status, "mounted", JSON.stringify(views[0]));
      await sh(
        sandbox,
        `echo hello from the guest > ${MOUNT}/hello.txt && mkdir -p ${MOUNT}/dir && echo x > ${MOUNT}/dir/x`,
      );
      const result = await sandbox.runCommand("ls", ["-la", MOUNT]);
      console.log(result.result.stdout);
      assert.match(out.join("\n"), /hello\.txt/);

      // Live attach of a second path exposing a sub-folder; by name, as attachDisk allows.
      const t0 = Date.now();
      await sandbox.attachDisk({ diskId: "my-data", mountPath: "/mnt/assets", subPath: "project/assets" });
      const attachMs = Date.now() - t0;
      const both = await sandbox.listDisks();
      assert.deepEqual(
        both.map((d: { mount_path: string; sub_path?: string; mount_status: string }) => [
          d.mount_path,
          d.sub_path,
          d.mount_status,
        ]),
        [
          [MOUNT, undefined, "mounted"],
          ["/mnt/assets", "project/assets", "mounted"],
        ],
        JSON.stringify(both),
      );
      await sh(sandbox, "echo asset > /mnt/assets/a.txt && mv /mnt/assets/a.txt /mnt/assets/b.txt");
      assert.equal(
        (await sh(sandbox, "ls /mnt/assets")).trim(),
        "b.txt",
        "the sub_path mount sees only its prefix",
      );

      // The S3 API itself holds what the guest wrote, under the sub_path's prefix for the second mount.
      const direct = await s3Call(ENDPOINT, "GET", "/data/hello.txt", { keys });
      assert.equal(direct.body.toString(), "hello from the guest\n");
      const asset = await s3Call(ENDPOINT, "GET", "/data/project/assets/b.txt", { keys });
      assert.equal(asset.body.toString(), "asset\n");

      // Keys rotated to bad ones break the live mount at once, and listDisks says why; good ones mend it.
      await client.disks.rotateCredentials("my-data", {
        access_key: keys.access_key,
        secret_key: "not-the-key",
      });
      // (s3fs 1.90 answers a 403 on a lookup as an empty success: the exit code says nothing here.)
      await sandbox.runCommand("cat", [`${MOUNT}/never-written.txt`]);
      const broken = (await sandbox.listDisks()).find((d: { mount_path: string }) => d.mount_path === MOUNT);
      assert.equal(broken.mount_status, "error", JSON.stringify(broken));
      assert.match(broken.mount_error, /refused the disk's credentials/);
      await client.disks.rotateCredentials("my-data", {
        access_key: keys.access_key,
        secret_key: keys.secret_key,
      });
      assert.equal((await sh(sandbox, `cat ${MOUNT}/hello.txt`)).trim(), "hello from the guest");
      const mended = (await sandbox.listDisks()).find((d: { mount_path: string }) => d.mount_path === MOUNT);
      assert.equal(mended.mount_status, "mounted", JSON.stringify(mended));

      // A root process in the guest finds the key nowhere: environments, files, the mount's config.
      // The pattern arrives on stdin and is kept in /dev/shm (not searched), so no argv carries it.
      const found = await shIn(
        sandbox.id,
        `p=/dev/shm/pat; cat > $p; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do grep -qaF -f $p "$f" 2>/dev/null && echo "$f"; done;
         grep -rlaF -f $p /etc /root /run /tmp /var /home /opt ${MOUNT} 2>/dev/null; env | grep -F -f $p; rm $p; echo searched`,
        keys.secret_key,
      );
      assert.equal(found, "searched\n");
      // Nor in the memory of the guest's s3fs processes, which do hold the dummy key they sign with (the
      // control that shows the search reads their memory at all).
      const [s3fsProcs, secretInMem, dummyInMem] = await pyIn(
        sandbox.id,
        MEM_PY,
        [],
        `${keys.secret_key}\nnot-a-secret`,
      );
      assert.equal(s3fsProcs, 2, "one s3fs per mount");
      assert.equal(secretInMem, 0, "the secret key in s3fs's memory");
      assert.ok(dummyInMem! > 0, "the search sees s3fs's own dummy key");
      // Nor in the mount's traffic, as the guest captures it while a write goes through. SigV4 never sends a
      // secret, so the telling checks are the others: the requests carry the dummy key id and not the real
      // one, so they are signed with the dummy secret, and the real keys exist only on the host.
      const [wrote, secretOnWire, accessOnWire, dummyOnWire, puts] = await pyIn(
        sandbox.id,
        WIRE_PY,
        [`echo traffic > ${MOUNT}/traffic.txt && cat ${MOUNT}/hello.txt > /dev/null`],
        `${keys.secret_key}\n${keys.access_key}\nCredential=signed-by-host/\nPUT /`,
      );
      assert.deepEqual([wrote, secretOnWire, accessOnWire], [0, 0, 0]);
      assert.ok(dummyOnWire! > 0 && puts! > 0, `captured ${dummyOnWire} dummy-signed requests, ${puts} PUTs`);
      assert.equal(
        (await s3Call(ENDPOINT, "GET", "/data/traffic.txt", { keys })).body.toString(),
        "traffic\n",
      );

      // The recipe's detach, by id; it answers once the mount is flushed and gone.
      const det = await sandbox.detachDisk({ diskId: DISK_ID, mountPath: MOUNT });
      assert.deepEqual(det, { detached: true });
      await sh(sandbox, `! mountpoint -q ${MOUNT}`);
      assert.equal((await sandbox.listDisks()).length, 1);

      // A second sandbox mounts the same disk at boot and sees the first one's files; pause/resume keeps it.
      // Through the seed's CLI lines: `create --disk name:/path` here, the `disk` ones below.
      const cli = await cliAs(s.url, s.adminKey);
      const box = await cli.ok(
        ["sandbox", "create", "--shape", "s-1vcpu-1gb", "--name", "my-box"],
        ["--disk", "my-data:/data"],
      );
      assert.equal(box.name, "my-box");
      second = await client.getSandbox(box.id);
      assert.deepEqual(
        (await second.listDisks()).map((d: { mount_path: string; mount_status: string }) => [
          d.mount_path,
          d.mount_status,
        ]),
        [["/data", "mounted"]],
      );

      // The seed's disk lines against this server, with its names, on a second bucket.
      const made = await cli.ok(
        ["sandbox", "disk", "create", "my-disk", "--bucket", "my-bucket", "--endpoint", ENDPOINT],
        ["--access-key", keys.access_key, "--secret-key", keys.secret_key],
      );
      // Off a terminal the CLI answers JSON.
      assert.deepEqual(
        [made.action, made.name, made.config],
        ["disk_created", "my-disk", { bucket: "my-bucket", endpoint: ENDPOINT }],
      );
      const listed = await cli.ok(["sandbox", "disk", "ls"]);
      assert.deepEqual(
        listed.map((d: { name: string; config: { bucket: string } }) => [d.name, d.config.bucket]),
        [
          ["my-disk", "my-bucket"],
          ["my-data", "data"],
        ],
      );
      const attached = await cli.ok(["sandbox", "disk", "attach", "my-box", "my-disk:/mnt/data"]);
      assert.deepEqual([attached.action, attached.mount_path], ["disk_attached", MOUNT]);
      await sh(second, `echo from the cli > ${MOUNT}/cli.txt`);
      const viaCli = await s3Call(ENDPOINT, "GET", "/my-bucket/cli.txt", { keys });
      assert.equal(viaCli.body.toString(), "from the cli\n");

      // The bucket deleted later through the S3 API: the next use of the mount says so in its status.
      assert.equal((await s3Call(ENDPOINT, "DELETE", "/my-bucket/cli.txt", { keys })).status, 204);
      const dropped = await s3Call(ENDPOINT, "DELETE", "/my-bucket", { keys });
      assert.equal(dropped.status, 204, dropped.body.toString());
      // biome-ignore lint/suspicious/noExplicitAny: SDK view
      let gone: any;
      for (let i = 0; i < 20 && gone?.mount_status !== "error"; i++) {
        if (i) await sleep(1000);
        await second.runCommand("sh", ["-c", `ls ${MOUNT}; touch ${MOUNT}/after-delete.txt`]);
        gone = (await second.listDisks()).find((d: { mount_path: string }) => d.mount_path === MOUNT);
      }
      assert.equal(gone.mount_status, "error", JSON.stringify(gone));
      assert.equal(gone.mount_error, `no bucket my-bucket at ${ENDPOINT}`);
      // Detach and rm ask first, as the seed shows them: answered in a terminal.
      await cli.confirm(
        ["sandbox", "disk", "detach", "my-box", "my-disk"],
        /Unmount my-disk/,
        /Unmounted my-disk/,
      );
      await sh(second, `! mountpoint -q ${MOUNT}`);
      await cli.confirm(
        ["sandbox", "disk", "rm", "my-disk"],
        /Delete disk my-disk\?/,
        /Deleted disk my-disk/,
      );
      assert.deepEqual(
        (await cli.ok(["sandbox", "disk", "ls"])).map((d: { name: string }) => d.name),
        ["my-data"],
      );

      assert.equal((await sh(second, "cat /data/hello.txt /data/dir/x")).trim(), "hello from the guest\nx");
      const busy = await call(s.url, "DELETE", `/v1/disks/${DISK_ID}`, { key: s.adminKey });
      assert.equal(busy.status, 409, busy.text);
      await second.pause();
      await second.waitUntilPaused();
      await second.resume();
      await second.waitUntilRunning();
      await sh(second, "echo after resume > /data/resumed.txt");
      assert.equal((await sh(second, "cat /data/hello.txt")).trim(), "hello from the guest");
      const resumed = await s3Call(ENDPOINT, "GET", "/data/resumed.txt", { keys });
      assert.equal(resumed.body.toString(), "after resume\n");
      console.log(`attach ms: ${attachMs}`);
    } finally {
      await sandbox.destroy();
      await second?.destroy();
    }
    // 5. Delete the disk registration (bucket contents are untouched).
    await client.disks.delete(disk.name).catch((e: unknown) => console.warn(e));
    assert.equal((await call(s.url, "GET", "/v1/disks/my-data", { key: s.adminKey })).status, 404);
    assert.equal((await s3Call(ENDPOINT, "GET", "/data/hello.txt", { keys })).status, 200);

    // No clear-text key in the control plane's logs or database files.
    assert.ok(!s.logs.join("\n").includes(keys.secret_key));
    for (const f of readdirSync(s.dataDir).filter((n) => n.startsWith("db.sqlite")))
      assert.ok(!readFileSync(join(s.dataDir, f)).includes(keys.secret_key), f);
  },
);
