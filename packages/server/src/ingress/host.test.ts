import assert from "node:assert/strict";
import { test } from "node:test";
import { endToEnd } from "@createos-sandbox/protocol/http-relay";
import { ingressTemplate, parseIngressHost, portSuffix } from "./host.js";

const ULID = "01jdx5k9v3m8q2w7e4r6t0y1ab";
const ID = `sb-${ULID}`;

test("Host names a sandbox and a guest port, with or without the sb- prefix", () => {
  assert.deepEqual(parseIngressHost(`${ULID}-8000.localhost:8081`, "localhost"), {
    sandboxId: ID,
    port: 8000,
  });
  assert.deepEqual(parseIngressHost(`sb-${ULID}-80.preview.example.com`, "preview.example.com"), {
    sandboxId: ID,
    port: 80,
  });
  // Case and a trailing dot of a fully qualified name do not matter.
  assert.deepEqual(parseIngressHost(`${ULID.toUpperCase()}-65535.LOCALHOST.`, "localhost"), {
    sandboxId: ID,
    port: 65535,
  });
});

test("Hosts that name none of ours are refused", () => {
  for (const h of [
    undefined,
    "",
    "localhost",
    `${ULID}-8000.example.com`, // another domain
    `${ULID}-8000.notlocalhost`, // a suffix without the dot
    `x.${ULID}-8000.localhost`, // a deeper name
    `${ULID}-0.localhost`,
    `${ULID}-65536.localhost`,
    `${ULID}-08000.localhost`, // not the canonical port
    `${ULID}.localhost`,
    `${ULID.slice(1)}-80.localhost`, // 25 characters
    `${ULID.replace("a", "u")}-80.localhost`, // u is not Crockford base32
    "my-box-8000.localhost", // names are per tenant: never routed
  ]) {
    assert.equal(parseIngressHost(h, "localhost"), undefined, String(h));
  }
});

test("the template carries the literal <port>, the proxy's scheme and its port", () => {
  const row = { id: ID, ingress_enabled: true };
  const cfg = { ingressDomain: "localhost", ingressOrigin: { scheme: "http" as const, port: ":8081" } };
  const tpl = ingressTemplate(row, cfg)!;
  assert.equal(tpl, `http://${ULID}-<port>.localhost:8081`);
  // What SDK 0.7.1's previewUrl() does with it, and that the result routes back here.
  const url = new URL(tpl.replace("<port>", "3000"));
  assert.deepEqual(parseIngressHost(url.host, "localhost"), { sandboxId: ID, port: 3000 });
  assert.equal(ingressTemplate({ ...row, ingress_enabled: false }, cfg), undefined);
  assert.equal(ingressTemplate(row, { ingressDomain: "localhost" }), undefined, "no template while off");
  const tls = { ingressDomain: "sb.example.com", ingressOrigin: { scheme: "https" as const, port: "" } };
  assert.equal(ingressTemplate(row, tls), `https://${ULID}-<port>.sb.example.com`);
  assert.equal(portSuffix("https", 443), "");
  assert.equal(portSuffix("http", 80), "");
  assert.equal(portSuffix("https", 8443), ":8443");
});

test("hop-by-hop headers stop at the proxy, including those Connection names", () => {
  const raw = [
    "Host",
    "a",
    "Connection",
    "keep-alive, X-Secret",
    "X-Secret",
    "1",
    "Keep-Alive",
    "5",
    "Accept",
    "*/*",
  ];
  raw.push("Transfer-Encoding", "chunked", "TE", "trailers", "Upgrade", "h2c", "Content-Type", "text/plain");
  assert.deepEqual(endToEnd(raw), ["Host", "a", "Accept", "*/*", "Content-Type", "text/plain"]);
});
