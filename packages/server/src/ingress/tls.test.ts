/** The ingress listener with an operator's certificate: HTTPS only, and a half-configured pair fails the start. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type ServerProc, cleanup, spawnLogged, startProc } from "../test/helpers.js";

const pexec = promisify(execFile);
const HOST = "01jdx5k9v3m8q2w7e4r6t0y1ab-8000.sb.test";

describe("ingress over TLS", () => {
  const dir = mkdtempSync(join(tmpdir(), "csb-ingress-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  let s: ServerProc;
  let port = 0;

  before(async () => {
    // A self-signed wildcard for the domain, as an operator's ACME client would leave one.
    await pexec("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=*.sb.test"],
      ...["-addext", "subjectAltName=DNS:*.sb.test"],
    ]);
    s = await startProc({
      env: {
        CREATEOS_SANDBOX_INGRESS_DOMAIN: "sb.test",
        CREATEOS_SANDBOX_INGRESS_TLS_CERT: cert,
        CREATEOS_SANDBOX_INGRESS_TLS_KEY: key,
      },
    });
    const line = await s.waitLog(/"msg":"ingress listening"/);
    port = Number(/"url":"https:\/\/127\.0\.0\.1:(\d+)"/.exec(line)![1]);
  });

  after(async () => {
    await s?.stop();
    if (s) cleanup(s.dataDir);
    cleanup(dir);
  });

  it("serves the certificate and answers an unknown sandbox 404 in plain words", async () => {
    const { stdout } = await pexec("curl", [
      ...["-s", "--cacert", cert, "--resolve", `${HOST}:${port}:127.0.0.1`],
      ...["-w", "\n%{http_code} %{content_type}", `https://${HOST}:${port}/`],
    ]);
    assert.equal(
      stdout,
      `no sandbox serves ${HOST}:${port}: the sandbox does not exist or its ingress is off\n\n404 text/plain; charset=utf-8`,
    );
  });

  it("speaks no plain HTTP on a TLS listener", async () => {
    const r = await pexec("curl", ["-s", "-m", "5", "-H", `Host: ${HOST}`, `http://127.0.0.1:${port}/`]).then(
      (x) => x.stdout,
      (e: { code?: number }) => `curl exit ${e.code}`,
    );
    assert.match(r, /^curl exit \d+$/);
  });

  it("a certificate without its key fails the start, saying so", async () => {
    const p = spawnLogged(["serve", "--port", "0", "--data-dir", join(dir, "half")], {
      ...(process.env as Record<string, string>),
      CREATEOS_SANDBOX_HOSTD: "none",
      CREATEOS_SANDBOX_INGRESS_LISTEN: "127.0.0.1:0",
      CREATEOS_SANDBOX_SSH_LISTEN: "off",
      CREATEOS_SANDBOX_INGRESS_TLS_CERT: cert,
      CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: `skp_${"t".repeat(32)}`,
    });
    await p.exited;
    assert.notEqual(p.proc.exitCode, 0);
    assert.ok(
      p.logs.some((l) => l.includes("CREATEOS_SANDBOX_INGRESS_TLS_CERT and _KEY must be set together")),
    );
  });
});
