/**
 * The host's extra CA certificates, carried into every image. Hosts behind a TLS-intercepting proxy (the
 * package registries reached through a proxy whose CA only the host trusts) need that CA inside the
 * sandboxes too, or `apt-get`, `npm install` and `curl https://…` fail there while they work on the host.
 *
 * What is carried: every `*.crt` under /usr/local/share/ca-certificates (what update-ca-certificates adds
 * to the host's bundle on top of the distribution's), plus each PEM file named by
 * `CREATEOS_SANDBOX_CA_CERTS` (comma-separated paths). Their content is part of the image's name, so a
 * changed or added CA builds new images.
 */
import { readFileSync, readdirSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { HostdError } from "@createos-sandbox/protocol";
import { sha256 } from "./util.js";

export const HOST_CA_DIR = "/usr/local/share/ca-certificates";
/** Inside the guest: a directory of our own under the one update-ca-certificates reads. */
const GUEST_CA_DIR = "usr/local/share/ca-certificates/createos";
const GUEST_BUNDLE = "etc/ssl/certs/ca-certificates.crt";
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export interface CaCert {
  /** Where it came from on the host. */
  source: string;
  pem: string;
}

export interface HostTrust {
  certs: CaCert[];
  /** "" when there is nothing to carry (the image is then what it would be without this module). */
  hash: string;
}

function crtFiles(dir: string): string[] {
  let entries: import("node:fs").Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...crtFiles(p));
    else if (e.name.endsWith(".crt")) out.push(p);
  }
  return out.sort();
}

/** The certificates of a PEM file, normalised (only the certificate blocks, one newline each). */
export function pemCertificates(text: string, source: string): string {
  const blocks = text.match(PEM_CERT);
  if (!blocks)
    throw new HostdError("not_ready", `${source} holds no PEM certificate (CREATEOS_SANDBOX_CA_CERTS)`);
  return `${blocks.join("\n")}\n`;
}

/** The extra CAs of this host, read now (synchronous: `builtImage()` names images by them). */
export function hostTrust(env: NodeJS.ProcessEnv = process.env, caDir = HOST_CA_DIR): HostTrust {
  const named = (env.CREATEOS_SANDBOX_CA_CERTS ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const certs: CaCert[] = [];
  for (const source of [...crtFiles(caDir), ...named]) {
    let text: string;
    try {
      text = readFileSync(source, "utf8");
    } catch (e) {
      throw new HostdError("not_ready", `cannot read CA certificate ${source}: ${(e as Error).message}`);
    }
    certs.push({ source, pem: pemCertificates(text, source) });
  }
  const hash = certs.length === 0 ? "" : sha256(...certs.flatMap((c) => [basename(c.source), c.pem]));
  return { certs, hash };
}

/**
 * Installs the CAs into an unpacked tree: as files update-ca-certificates finds (so a later
 * `update-ca-certificates` in the guest keeps them) and appended to the bundle that OpenSSL, GnuTLS
 * (apt), curl and Debian's Node.js read.
 */
export async function installTrust(root: string, trust: HostTrust): Promise<void> {
  if (trust.certs.length === 0) return;
  await mkdir(join(root, GUEST_CA_DIR), { recursive: true, mode: 0o755 });
  let i = 0;
  for (const c of trust.certs) {
    const name = `${String(i++).padStart(2, "0")}-${basename(c.source).replace(/[^A-Za-z0-9._-]/g, "_")}`;
    const file = join(root, GUEST_CA_DIR, name.endsWith(".crt") ? name : `${name}.crt`);
    await writeFile(file, c.pem, { mode: 0o644 });
  }
  const bundle = join(root, GUEST_BUNDLE);
  await mkdir(join(root, "etc/ssl/certs"), { recursive: true });
  const base = await readFile(bundle, "utf8").catch(() => "");
  const sep = base === "" || base.endsWith("\n") ? "" : "\n";
  await writeFile(bundle, base + sep + trust.certs.map((c) => c.pem).join(""));
  await chmod(bundle, 0o644);
}
