import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { hostTrust, installTrust, pemCertificates } from "./trust.js";

const pem = (body: string) => `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----`;

test("the host's extra CAs and CREATEOS_SANDBOX_CA_CERTS name the image; a changed CA a new one", async () => {
  const dir = await mkdtemp(join(tmpdir(), "trust-"));
  try {
    const caDir = join(dir, "ca");
    await mkdir(join(caDir, "sub"), { recursive: true });
    assert.deepEqual(hostTrust({}, caDir), { certs: [], hash: "" });
    await writeFile(join(caDir, "a.crt"), `${pem("AAAA")}\n`);
    await writeFile(join(caDir, "sub", "b.crt"), pem("BBBB"));
    await writeFile(join(caDir, "ignored.pem"), pem("CCCC"));
    const extra = join(dir, "proxy.pem");
    await writeFile(extra, `junk before\n${pem("DDDD")}\ntrailing\n`);
    const t = hostTrust({ CREATEOS_SANDBOX_CA_CERTS: ` ${extra} ,` }, caDir);
    assert.deepEqual(
      t.certs.map((c) => c.source),
      [join(caDir, "a.crt"), join(caDir, "sub", "b.crt"), extra],
    );
    assert.equal(t.certs[2]?.pem, `${pem("DDDD")}\n`);
    assert.match(t.hash, /^[0-9a-f]{16}$/);
    assert.equal(hostTrust({ CREATEOS_SANDBOX_CA_CERTS: extra }, caDir).hash, t.hash);
    await writeFile(extra, pem("EEEE"));
    assert.notEqual(hostTrust({ CREATEOS_SANDBOX_CA_CERTS: extra }, caDir).hash, t.hash);
    assert.throws(
      () => hostTrust({ CREATEOS_SANDBOX_CA_CERTS: join(dir, "missing.pem") }, caDir),
      /cannot read/,
    );
    await writeFile(extra, "not a certificate");
    assert.throws(() => hostTrust({ CREATEOS_SANDBOX_CA_CERTS: extra }, caDir), /no PEM certificate/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("installed into the guest tree: appended to the bundle and kept for update-ca-certificates", async () => {
  const root = await mkdtemp(join(tmpdir(), "trust-root-"));
  try {
    await installTrust(root, { certs: [], hash: "" });
    assert.deepEqual(await readdir(root), [], "nothing to carry, nothing written");
    await mkdir(join(root, "etc/ssl/certs"), { recursive: true });
    await writeFile(join(root, "etc/ssl/certs/ca-certificates.crt"), pem("DIST"));
    const certs = [
      { source: "/x/proxy ca.crt", pem: `${pem("P1")}\n` },
      { source: "/y/other.pem", pem: `${pem("P2")}\n` },
    ];
    await installTrust(root, { certs, hash: "0123456789abcdef" });
    const bundle = await readFile(join(root, "etc/ssl/certs/ca-certificates.crt"), "utf8");
    assert.equal(bundle, `${pem("DIST")}\n${pem("P1")}\n${pem("P2")}\n`);
    const dir = join(root, "usr/local/share/ca-certificates/createos");
    assert.deepEqual((await readdir(dir)).sort(), ["00-proxy_ca.crt", "01-other.pem.crt"]);
    assert.equal(await readFile(join(dir, "01-other.pem.crt"), "utf8"), `${pem("P2")}\n`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("only the certificate blocks of a PEM file are kept", () => {
  assert.equal(pemCertificates(`a\n${pem("X")}\nb\n${pem("Y")}\n`, "f"), `${pem("X")}\n${pem("Y")}\n`);
});
