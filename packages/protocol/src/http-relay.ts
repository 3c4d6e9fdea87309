/**
 * What an HTTP relay passes on, shared by the host daemon's name proxy (hostd net/proxyhttp.ts) and the
 * control plane's ingress (server ingress/forward.ts): the end-to-end headers of a message, and a response
 * head written raw to a socket the HTTP server has let go of (upgrades, refusals).
 */

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the ones a relay sets itself. */
const HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
]);

/** Raw header pairs without hop-by-hop ones and those `Connection` names. */
export function endToEnd(raw: readonly string[]): string[] {
  const named = new Set<string>();
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]?.toLowerCase() === "connection")
      for (const t of (raw[i + 1] ?? "").split(",")) named.add(t.trim().toLowerCase());
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = (raw[i] ?? "").toLowerCase();
    if (!HOP.has(k) && !named.has(k)) out.push(raw[i] ?? "", raw[i + 1] ?? "");
  }
  return out;
}

/** The raw bytes of a response head: status line and header pairs. */
export function rawHead(status: number, message: string, headers: readonly string[]): string {
  let s = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i < headers.length; i += 2) s += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${s}\r\n`;
}
