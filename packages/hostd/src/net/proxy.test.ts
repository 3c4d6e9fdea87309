import assert from "node:assert/strict";
import { type AddressInfo, createServer } from "node:net";
import { test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { egressPolicy } from "@createos-sandbox/protocol/egress";
import { egressScript } from "./egress.js";
import { dialable, httpHostOf, nameAllowed, slotOfSource, sniOf } from "./proxy.js";

/** The first bytes a TLS client sends (its ClientHello) for `servername`. */
async function clientHello(servername: string): Promise<Buffer> {
  return await new Promise((resolve) => {
    const srv = createServer((c) => {
      c.once("data", (d: Buffer) => {
        resolve(d);
        c.destroy();
        srv.close();
      });
    }).listen(0, "127.0.0.1", () => {
      const t = tlsConnect({ host: "127.0.0.1", port: (srv.address() as AddressInfo).port, servername });
      t.on("error", () => undefined);
    });
  });
}

test("the SNI of a real ClientHello; none from other bytes", async () => {
  const hello = await clientHello("Web-A.Test");
  assert.equal(sniOf(hello), "web-a.test");
  assert.equal(sniOf(hello.subarray(0, 40)), undefined, "cut short");
  assert.equal(sniOf(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), undefined);
});

test("the Host header of a request head", () => {
  assert.equal(
    httpHostOf(Buffer.from("GET / HTTP/1.1\r\nHost: Web-A.test:8080\r\nX: y\r\n\r\n")),
    "web-a.test",
  );
  assert.equal(httpHostOf(Buffer.from("GET / HTTP/1.1\r\nhost:web-b.test.\r\n\r\nbody")), "web-b.test");
  assert.equal(httpHostOf(Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n")), undefined, "head not complete");
  assert.equal(httpHostOf(Buffer.from("GET / HTTP/1.0\r\n\r\n")), undefined, "no Host");
  assert.equal(httpHostOf(Buffer.from("GET / HTTP/1.1\r\nX-Host: a.com\r\n\r\n")), undefined);
});

test("names match as the resolver matches them, with the rule's port", () => {
  const p = egressPolicy(["pypi.org", "*.github.com", "api.example.com:443"]);
  assert.ok(!p.all);
  const { names } = p;
  assert.ok(nameAllowed(names, "pypi.org", 443));
  assert.ok(nameAllowed(names, "files.pypi.org", 80));
  assert.ok(!nameAllowed(names, "notpypi.org", 443));
  assert.ok(nameAllowed(names, "api.github.com", 443));
  assert.ok(!nameAllowed(names, "github.com", 443), "*.github.com does not cover github.com");
  assert.ok(nameAllowed(names, "api.example.com", 443));
  assert.ok(!nameAllowed(names, "api.example.com", 80), "port 443 only");
});

test("the proxy dials only what a guest could reach", () => {
  assert.ok(dialable("1.1.1.1", []));
  assert.ok(!dialable("10.1.2.3", []));
  assert.ok(dialable("10.1.2.3", ["10.1.0.0/16"]));
  assert.ok(!dialable("10.201.0.5", ["10.0.0.0/8"]), "another sandbox, whatever is listed");
  assert.ok(!dialable("169.254.169.254", []));
  assert.ok(!dialable("::1", []));
});

test("a connection's source names its slot", () => {
  assert.equal(slotOfSource("10.201.0.7"), 7);
  assert.equal(slotOfSource("::ffff:10.201.1.2"), 258);
  assert.equal(slotOfSource("10.200.0.7"), undefined);
});

test("with name rules, 80/443 to pinned addresses go to the proxy (golden)", () => {
  const script = egressScript(egressPolicy(["pypi.org", "api.example.com:443", "8.8.8.8"]), {
    http: 4001,
    tls: 4002,
  });
  assert.match(script, /ct direction reply accept\n {4}ip daddr 10\.200\.0\.1 ct status dnat accept\n/);
  assert.ok(
    script.endsWith(`  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "tap0" jump to_proxy
  }
  chain to_proxy {
    ip daddr @nets return
    meta l4proto tcp ip daddr . th dport @net_ports return
    tcp dport 80 ip daddr @dns dnat ip to 10.200.0.1:4001
    tcp dport 443 ip daddr @dns dnat ip to 10.200.0.1:4002
    tcp dport 443 ip daddr @dns_p443 dnat ip to 10.200.0.1:4002
  }
}
`),
    script,
  );
  assert.doesNotMatch(
    egressScript(egressPolicy(["8.8.8.8"]), { http: 1, tls: 2 }),
    /to_proxy/,
    "no names: no proxy",
  );
});
