/**
 * The SSH gateway's listener without VMs (CREATEOS_SANDBOX_HOSTD=none): the OpenSSH client against it for
 * refusals and the per-address failed-login limit, a raw socket for the login grace time, and the host key
 * kept across restarts.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type ServerProc, cleanup, startProc } from "../test/helpers.js";

const pexec = promisify(execFile);
const ENV = {
  CREATEOS_SANDBOX_SSH_LOGIN_GRACE_MS: "600",
  CREATEOS_SANDBOX_AUTH_FAIL_BURST: "2",
  CREATEOS_SANDBOX_AUTH_FAIL_RPS: "0.01",
};

describe("SSH gateway listener", () => {
  let s: ServerProc;
  let port = 0;
  const started = async (dataDir?: string) => {
    s = await startProc({ env: ENV, ...(dataDir ? { dataDir } : {}) });
    port = Number(/"port":(\d+)/.exec(await s.waitLog(/"msg":"ssh gateway listening"/))![1]);
  };

  before(() => started());
  after(async () => {
    await s?.stop();
    if (s) cleanup(s.dataDir);
  });

  const key = () => join(s.dataDir, "client-key");
  async function ssh(user: string): Promise<{ code: number; err: string }> {
    const opts = [
      "BatchMode=yes",
      "StrictHostKeyChecking=no",
      "UserKnownHostsFile=/dev/null",
      "IdentitiesOnly=yes",
    ];
    const args = [
      "-i",
      key(),
      ...opts.flatMap((o) => ["-o", o]),
      "-p",
      String(port),
      `${user}@127.0.0.1`,
      "true",
    ];
    return pexec("ssh", args, { timeout: 30_000 }).then(
      () => ({ code: 0, err: "" }),
      (e: { code?: number; stderr?: string }) => ({ code: e.code ?? -1, err: e.stderr ?? "" }),
    );
  }

  it("refuses unknown sandboxes, then disconnects the address before the handshake", async () => {
    await pexec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key()]);
    for (const user of ["sb-00000000000000000000000000", "no-such-box"]) {
      const r = await ssh(user);
      assert.equal(r.code, 255);
      assert.match(r.err, /Permission denied \(publickey\)/, user);
    }
    await s.waitLog(/"msg":"ssh refused".*"user":"no-such-box","reason":"unknown sandbox"/);
    const blocked = await ssh("sb-00000000000000000000000000");
    assert.equal(blocked.code, 255);
    assert.doesNotMatch(blocked.err, /Permission denied/, "no authentication was offered");
    assert.match(blocked.err, /Connection (closed|reset)|kex_exchange_identification/);
    await s.waitLog(/"msg":"ssh refused".*"reason":"too many failed logins; retry in \d+ s"/);
  });

  it("closes a connection that does not log in within the grace time", async () => {
    // A fresh server: the last test's address is blocked on the old one.
    await s.stop();
    await started(s.dataDir);
    const t0 = Date.now();
    const sock = connect(port, "127.0.0.1");
    let banner = "";
    sock.on("data", (d: Buffer) => {
      banner += d.toString("latin1");
    });
    await new Promise<void>((r) => sock.once("close", () => r()));
    const ms = Date.now() - t0;
    assert.match(banner, /^SSH-2\.0-createos-sandbox\r\n/);
    assert.ok(ms >= 500 && ms < 5000, `closed after ${ms} ms`);
    await s.waitLog(/"msg":"ssh refused".*"reason":"no login within the grace time"/);
  });

  it("keeps one host key in the data dir (0600) across restarts", async () => {
    const file = join(s.dataDir, "ssh-host-key");
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const scan = async () =>
      (await pexec("ssh-keyscan", ["-t", "ed25519", "-p", String(port), "127.0.0.1"])).stdout;
    const before = (await scan()).split(" ").slice(1).join(" ").trim();
    const pub = (await pexec("ssh-keygen", ["-y", "-f", file])).stdout.split(" ").slice(0, 2).join(" ");
    assert.equal(before, pub);
    await s.stop();
    await started(s.dataDir);
    assert.equal((await scan()).split(" ").slice(1).join(" ").trim(), pub);
  });
});
