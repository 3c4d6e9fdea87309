import assert from "node:assert/strict";
import { type Socket as UdpSocket, createSocket as createUdpSocket } from "node:dgram";
import { type Server as HttpServer, type IncomingMessage, createServer as createHttpServer } from "node:http";
import { type AddressInfo, type Server, type Socket, connect, createServer } from "node:net";
import type { Duplex } from "node:stream";
import { after, before, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { egressPolicy } from "@createos-sandbox/protocol/egress";
import { egressScript } from "./egress.js";
import { MAX_PROXIED_PER_SANDBOX, NameProxy, dialable, nameAllowed, slotOfSource, sniOf } from "./proxy.js";

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
  assert.ok(!nameAllowed(names, "evil.test x.pypi.org", 443), "not a host name: never allowed");
  assert.ok(!nameAllowed(names, "evil.test/.pypi.org", 443));
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

// The proxy itself, on 127.0.0.1, in front of an upstream on 127.0.0.2 (what 127/8 private egress lets it
// dial; 127.0.0.1 is the host's own and never is) that `allowed.test` and `other.test` share, as two sites
// behind one CDN address do. Names resolve through a test DNS server. Every connection is slot 7's.

const UP = "127.0.0.2";
/** `raw.test`'s upstream, on UP's port, answers a head Node's client reads but its server will not send. */
const RAW_UP = "127.0.0.3";
const RECORDS: Record<string, string> = {
  "allowed.test": UP,
  "other.test": UP,
  "host.test": "127.0.0.1",
  "raw.test": RAW_UP,
};

/** A DNS server on 127.0.0.1 answering A queries from RECORDS, NXDOMAIN otherwise. */
async function dnsServer(): Promise<UdpSocket> {
  const s = createUdpSocket("udp4");
  s.on("message", (q, peer) => {
    let i = 12;
    const labels: string[] = [];
    while (q[i]) {
      labels.push(q.subarray(i + 1, i + 1 + (q[i] ?? 0)).toString());
      i += 1 + (q[i] ?? 0);
    }
    const ip = RECORDS[labels.join(".").toLowerCase()];
    const an = ip && q.readUInt16BE(i + 1) === 1 ? 1 : 0;
    const head = Buffer.alloc(12);
    q.copy(head, 0, 0, 2);
    head.writeUInt16BE(ip ? 0x8180 : 0x8183, 2);
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(an, 6);
    const answer = an
      ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...(ip ?? "").split(".").map(Number)])
      : Buffer.alloc(0);
    s.send(Buffer.concat([head, q.subarray(12, i + 5), answer]), peer.port, peer.address);
  });
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
  return s;
}

/** What the upstream was asked: `host` is every Host header it got. */
const seen: { method: string; url: string; host: string[] }[] = [];
const tlsSeen: Buffer[] = [];
let policy = egressPolicy(["allowed.test"]);
let sourceSlot: number | undefined = 7;
let proxy: NameProxy;
let dns: UdpSocket;
let upstream: HttpServer;
let tlsUpstream: Server;
let rawUpstream: Server;

before(async () => {
  dns = await dnsServer();
  upstream = createHttpServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", host: hostHeaders(req.rawHeaders) });
    if (req.url !== "/stream")
      return void req.resume().on("end", () => res.end(`ok ${req.headers.host} ${req.url}`));
    // answers as the body arrives: the first chunk before the rest is sent, the end after it
    res.writeHead(200);
    req.once("data", (d: Buffer) => res.write(`got-${d} `));
    req.on("end", () => res.end("end"));
  });
  upstream.on("upgrade", (req: IncomingMessage, socket: Duplex) => {
    seen.push({ method: "UPGRADE", url: req.url ?? "", host: hostHeaders(req.rawHeaders) });
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    socket.on("data", (d: Buffer) => socket.write(`echo:${d}`));
    socket.on("end", () => socket.end()); // an HTTP server's sockets are half-open
  });
  tlsUpstream = createServer((c) =>
    c.once("data", (d: Buffer) => {
      tlsSeen.push(d);
      c.end("tls-ok");
    }),
  );
  await new Promise<void>((r) => upstream.listen(0, UP, r));
  await new Promise<void>((r) => tlsUpstream.listen(0, UP, r));
  rawUpstream = createServer((c) =>
    c.once("data", () => c.end(Buffer.from("HTTP/1.1 200 O\x7fK\r\nContent-Length: 2\r\n\r\nhi", "latin1"))),
  );
  await new Promise<void>((r) => rawUpstream.listen((upstream.address() as AddressInfo).port, RAW_UP, r));
  proxy = new NameProxy({
    policyOf: (slot) => (slot === 7 ? policy : undefined),
    privateEgress: ["127.0.0.0/8"],
    upstreams: [`127.0.0.1:${(dns.address() as AddressInfo).port}`],
    listenIp: "127.0.0.1",
    slotOf: () => sourceSlot,
    upstreamPort: (p) => ((p === 80 ? upstream : tlsUpstream).address() as AddressInfo).port,
  });
  await proxy.start();
});

after(async () => {
  await proxy.close();
  upstream.closeAllConnections();
  await new Promise((r) => upstream.close(r));
  await new Promise((r) => tlsUpstream.close(r));
  await new Promise((r) => rawUpstream.close(r));
  dns.close();
});

function hostHeaders(raw: string[]): string[] {
  return raw.filter((_, i) => i % 2 === 1 && raw[i - 1]?.toLowerCase() === "host");
}

/** A guest connection to the proxy's HTTP (or TLS) port: what it got so far, and waits on it. */
function guest(port = proxy.ports.http) {
  const c = connect(port, "127.0.0.1");
  let got = "";
  let ended = false;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  c.on("data", (d: Buffer) => {
    got += d.toString("latin1");
    wake();
  });
  c.on("error", (e) => {
    got += `<${(e as NodeJS.ErrnoException).code}>`;
  });
  c.on("close", () => {
    ended = true;
    wake();
  });
  const until = async (ok: () => boolean, what: string) => {
    while (!ok()) {
      if (ended) assert.fail(`connection closed waiting for ${what}; got ${JSON.stringify(got)}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return {
    write: (s: string | Buffer) => c.write(s),
    /** Waits until `s` arrived; answers what arrived and starts afresh. */
    async see(s: string): Promise<string> {
      await until(() => got.includes(s), JSON.stringify(s));
      const all = got;
      got = "";
      return all;
    },
    /** Waits until the proxy closed the connection; answers what arrived. */
    async closed(): Promise<string> {
      await until(() => ended, "the close");
      return got;
    },
  };
}

const get = (host: string, path = "/", extra = "") => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;

test("HTTP: an allowed name's request goes to its address; the connection is kept for the next", async () => {
  seen.length = 0;
  const g = guest();
  g.write(get("allowed.test", "/one"));
  assert.match(await g.see("ok allowed.test /one"), /^HTTP\/1\.1 200 OK\r\n/);
  g.write(get("Allowed.Test:80", "/two"));
  await g.see("ok Allowed.Test:80 /two");
  // a kept-alive connection's next request naming a site not on the list: refused, never sent upstream
  g.write(get("other.test", "/three"));
  const refused = await g.closed();
  assert.match(refused, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(refused, /\r\nConnection: close\r\n/);
  assert.match(refused, /name proxy: other\.test is not on this sandbox's egress allowlist for port 80\n$/);
  assert.deepEqual(
    seen.map((s) => s.url),
    ["/one", "/two"],
  );
});

test("HTTP: pipelined requests are checked one by one", async () => {
  seen.length = 0;
  const g = guest();
  g.write(get("allowed.test", "/a") + get("other.test", "/b") + get("allowed.test", "/c"));
  const all = await g.closed();
  assert.match(all, /ok allowed\.test \/a.*HTTP\/1\.1 403 Forbidden.*other\.test is not on/s);
  assert.deepEqual(
    seen.map((s) => s.url),
    ["/a"],
  );
});

test("HTTP: an absolute target for another host, or a second Host header, is refused (domain fronting)", async () => {
  seen.length = 0;
  const cases: [string, RegExp][] = [
    [
      get("allowed.test", "http://other.test/"),
      /the request target "http:\/\/other\.test\/" names another host/,
    ],
    [`${get("allowed.test").slice(0, -2)}Host: other.test\r\n\r\n`, /more than one Host header/],
    [`${get("allowed.test").slice(0, -2)}host: allowed.test\r\n\r\n`, /more than one Host header/],
    ["GET / HTTP/1.0\r\n\r\n", /the request has no Host header/],
    [get("allowed.test other.test"), /is not a host name/],
    [get("host.test", "/", ""), /host\.test is not on/],
    ["CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n", /CONNECT is not allowed/],
  ];
  for (const [request, why] of cases) {
    const g = guest();
    g.write(request);
    const out = await g.closed();
    assert.match(out, /^HTTP\/1\.1 403 Forbidden\r\n/, request);
    assert.match(out, why, request);
  }
  assert.deepEqual(seen, [], "nothing reached the upstream");
  // an absolute target for the Host's own name goes upstream in origin form
  const g = guest();
  g.write(get("allowed.test", "http://allowed.test/p?q=1"));
  await g.see("ok allowed.test /p?q=1");
  assert.deepEqual(seen, [{ method: "GET", url: "/p?q=1", host: ["allowed.test"] }]);
});

test("HTTP: a listed name with no address the sandbox may reach is refused; the upstream down is a 502", async () => {
  policy = egressPolicy(["allowed.test", "host.test", "gone.test"]);
  try {
    for (const [name, status, why] of [
      ["host.test", "403 Forbidden", /host\.test has no address the sandbox may reach/],
      ["gone.test", "502 Bad Gateway", /ENOTFOUND/],
    ] as const) {
      const g = guest();
      g.write(get(name));
      const out = await g.closed();
      assert.ok(out.startsWith(`HTTP/1.1 ${status}\r\n`), out);
      assert.match(out, why);
    }
  } finally {
    policy = egressPolicy(["allowed.test"]);
  }
});

test("HTTP: an upstream's head that cannot be relayed is a 502, and the proxy goes on", async () => {
  policy = egressPolicy(["allowed.test", "raw.test"]);
  try {
    const g = guest();
    g.write(get("raw.test"));
    const out = await g.closed();
    assert.ok(out.startsWith("HTTP/1.1 502 Bad Gateway\r\n"), out);
    assert.match(out, /the upstream's response head cannot be relayed: Invalid character in statusMessage/);
    const next = guest();
    next.write(get("allowed.test", "/next"));
    await next.see("ok allowed.test /next");
  } finally {
    policy = egressPolicy(["allowed.test"]);
  }
});

test("HTTP: a name taken off the list stops at the connection's next request", async () => {
  const g = guest();
  g.write(get("allowed.test", "/before"));
  await g.see("ok allowed.test /before");
  policy = egressPolicy(["other.test"]);
  try {
    g.write(get("allowed.test", "/after"));
    assert.match(await g.closed(), /^HTTP\/1\.1 403 .*allowed\.test is not on/s);
  } finally {
    policy = egressPolicy(["allowed.test"]);
  }
});

test("HTTP: bodies stream both ways, chunk by chunk", async () => {
  const g = guest();
  g.write("POST /stream HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n");
  // the upstream answered the first chunk while the guest has not sent the rest: nothing waits for the end
  assert.match(await g.see("got-a "), /^HTTP\/1\.1 200 OK\r\n/);
  g.write("1\r\nb\r\n0\r\n\r\n");
  await g.see("end");
  const body = "x".repeat(100_000);
  g.write(`POST /sized HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await g.see("ok allowed.test /sized");
});

test("HTTP: a WebSocket upgrade is checked, then passes raw; other upgrades are refused", async () => {
  seen.length = 0;
  const ws = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
  const g = guest();
  g.write(get("allowed.test", "/ws", ws));
  assert.match(await g.see("\r\n\r\n"), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  g.write("ping");
  await g.see("echo:ping");
  for (const [request, why] of [
    [get("other.test", "/ws", ws), /other\.test is not on/],
    [
      get(
        "allowed.test",
        "/",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
      ),
      /only WebSocket upgrades/,
    ],
  ] as const) {
    const r = guest();
    r.write(request);
    const out = await r.closed();
    assert.match(out, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.match(out, why);
  }
  assert.deepEqual(seen, [{ method: "UPGRADE", url: "/ws", host: ["allowed.test"] }]);
});

test("a connection from no sandbox with a list is reset; TLS goes by the SNI", async () => {
  sourceSlot = undefined;
  try {
    const g = guest();
    g.write(get("allowed.test"));
    assert.equal(await g.closed(), "<ECONNRESET>");
  } finally {
    sourceSlot = 7;
  }
  tlsSeen.length = 0;
  const hello = await clientHello("allowed.test");
  const t = guest(proxy.ports.tls);
  t.write(hello);
  assert.equal(await t.closed(), "tls-ok");
  assert.deepEqual(tlsSeen, [hello], "the ClientHello, as the guest sent it");
  const o = guest(proxy.ports.tls);
  o.write(await clientHello("other.test"));
  assert.equal(await o.closed(), "<ECONNRESET>");
});

test("a sandbox holds at most MAX_PROXIED_PER_SANDBOX proxied connections; a closed one frees its place", async () => {
  // held open by their sandbox: TLS connections that have not sent their ClientHello yet
  const held = await Promise.all(
    Array.from(
      { length: MAX_PROXIED_PER_SANDBOX },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const c = connect(proxy.ports.tls, "127.0.0.1", () => resolve(c));
          c.once("error", reject);
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, 200)); // the proxy has taken each of them
  const over = guest(proxy.ports.http);
  over.write(get("allowed.test"));
  assert.equal(await over.closed(), "<ECONNRESET>", "one more is reset at once");
  const freed = new Promise((r) => held[0]!.once("close", r));
  held[0]!.destroy();
  await freed;
  await new Promise((r) => setTimeout(r, 100));
  const again = guest(proxy.ports.http);
  again.write(get("allowed.test"));
  assert.match(await again.see("ok allowed.test"), /^HTTP\/1\.1 200/, "a place freed by a close");
  for (const c of held) c.destroy();
});
