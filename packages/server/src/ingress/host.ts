/**
 * Ingress hostnames: `<ulid>-<port>.<domain>` (protocol.md §1.1), also `sb-<ulid>-<port>.<domain>` (the
 * sandbox id as the API spells it). One DNS label (≤ 63 characters), so a wildcard certificate for
 * `*.<domain>` covers every sandbox and port. Names are not accepted: they are unique per tenant only, and
 * a public hostname must name one sandbox.
 */
import type { ServerConfig } from "../config.js";
import type { SandboxRow } from "../store/types.js";

const LABEL = /^(?:sb-)?([0-9a-hjkmnp-tv-z]{26})-(\d{1,5})$/;

/** The sandbox id and guest port a `Host` header names, or undefined when it names none of ours. */
export function parseIngressHost(
  host: string | undefined,
  domain: string,
): { sandboxId: string; port: number } | undefined {
  if (!host) return undefined;
  // The port of the Host header is the proxy's own (or a load balancer's): routing ignores it.
  const name = host
    .replace(/:\d{1,5}$/, "")
    .replace(/\.$/, "")
    .toLowerCase();
  const suffix = `.${domain}`;
  if (!name.endsWith(suffix)) return undefined;
  const m = LABEL.exec(name.slice(0, -suffix.length));
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535 || String(port) !== m[2]) return undefined;
  return { sandboxId: `sb-${m[1]}`, port };
}

/**
 * The `ingress_url_template` of a sandbox: present only while its ingress is on and the proxy listens.
 * The scheme is https exactly when the proxy serves TLS, so the SDK's `previewUrl()` (default https,
 * `{ scheme: "http" }` rewrites an https template) gives working URLs either way.
 */
export function ingressTemplate(
  row: Pick<SandboxRow, "id" | "ingress_enabled">,
  cfg: Pick<ServerConfig, "ingressDomain" | "ingressOrigin">,
): string | undefined {
  const o = cfg.ingressOrigin;
  if (!row.ingress_enabled || !o) return undefined;
  return `${o.scheme}://${row.id.slice(3)}-<port>.${cfg.ingressDomain}${o.port}`;
}

/** The `:port` suffix of URLs on `port` (none for the scheme's default). */
export function portSuffix(scheme: "http" | "https", port: number): string {
  return (scheme === "http" && port === 80) || (scheme === "https" && port === 443) ? "" : `:${port}`;
}
