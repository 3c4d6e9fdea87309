/**
 * Test helper (registers no test): python3 programs for test hosts in network namespaces — an
 * authoritative DNS server over UDP with a fixed table, and a TCP echo server that keeps connections open.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";

/**
 * A DNS server on `ip`:53 (UDP only) answering A queries from `records` (name → IPv4, `*.domain` for
 * names under it; TTL 60) and NXDOMAIN for every other name.
 */
export function dnsServerPy(ip: string, records: Record<string, string>): string {
  return `
import socket, struct
recs = ${JSON.stringify(records)}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("${ip}", 53))
while True:
    q, a = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    name = ".".join(labels).lower(); qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    ip = recs.get(name) or recs.get("*." + name.split(".", 1)[-1])
    an = 1 if ip and qtype == 1 else 0
    r = q[:2] + struct.pack("!HHHHH", 0x8180 if ip else 0x8183, 1, an, 0, 0) + q[12:i + 5]
    if an:
        r += struct.pack("!HHHLH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    s.sendto(r, a)
`;
}

/** A TCP echo server on 0.0.0.0:`port` that keeps each connection until the peer closes it. */
export function holdEchoPy(port: number): string {
  return `
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", ${port})); t.listen(16)
def serve(c):
    try:
        while True:
            d = c.recv(100)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
while True:
    c, _ = t.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;
}

/** A guest program: a DNS query for `name` to `server` over `proto`; prints `rcode=<n> answers=<n>`. */
export function dnsQueryPy(name: string, server: string, proto: "udp" | "tcp"): string {
  return `
import socket, struct
q = struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0) + b"".join(bytes([len(l)]) + l.encode() for l in "${name}".split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
if "${proto}" == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, ("${server}", 53)); r = s.recv(512)
else:
    s = socket.create_connection(("${server}", 53), timeout=3); s.sendall(struct.pack("!H", len(q)) + q)
    n = struct.unpack("!H", s.recv(2))[0]; r = s.recv(n)
print("rcode=%d answers=%d" % (r[3] & 15, struct.unpack("!H", r[6:8])[0]))
`;
}

/**
 * A guest program: connect to host:port, then echo a byte every 100 ms until the connection fails; prints
 * `connected` once and, at the end, the error (`errno:<name>` or `timeout`).
 */
export function holdClientPy(host: string, port: number): string {
  return `
import errno, socket, sys, time
s = socket.create_connection(("${host}", ${port}), timeout=3)
print("connected", flush=True)
try:
    while True:
        s.sendall(b"x")
        if s.recv(1) != b"x":
            print("closed", flush=True); break
        time.sleep(0.1)
except socket.timeout:
    print("timeout", flush=True)
except OSError as e:
    print("errno:" + errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`;
}

/** The root namespace's IPv4 addresses but loopback (a guest's 127/8 is its own, never the host's). */
export function hostAddrs(): string[] {
  const out = execFileSync("ip", ["-4", "-o", "addr", "show"], { encoding: "utf8" });
  return [...out.matchAll(/ inet (\d+\.\d+\.\d+\.\d+)\//g)]
    .map((m) => m[1] ?? "")
    .filter((ip) => ip !== "" && !ip.startsWith("127."));
}

/** An octet n such that no address of this machine lies in any `<prefix>.<n>.0/24`. */
export function freeOctet(prefixes: readonly string[]): number {
  const used = hostAddrs();
  for (let i = 0; i < 256; i++) {
    const n = (process.pid + i) % 256;
    if (!used.some((ip) => prefixes.some((p) => ip.startsWith(`${p}.${n}.`)))) return n;
  }
  throw new Error(`no free ${prefixes.join("/")}.<n>.0/24 for the test hosts`);
}

/** An upload sink on 0.0.0.0:`port`: reads and discards what each connection sends. */
export function sinkPy(port: number): string {
  return `
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", ${port})); t.listen(16)
def drain(c):
    while c.recv(65536):
        pass
    c.close()
while True:
    c, _ = t.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
`;
}

/**
 * A guest program: sends `bytes` to host:port in 16 KiB writes; prints `done sent=<n>`, or `stalled
 * sent=<n>` when a write makes no progress for 3 s.
 */
export function uploadPy(host: string, port: number, bytes: number): string {
  return `
import socket
s = socket.create_connection(("${host}", ${port}), timeout=3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
buf, sent = b"x" * 16384, 0
try:
    while sent < ${bytes}:
        sent += s.send(buf[: min(16384, ${bytes} - sent)])
    print("done sent=%d" % sent, flush=True)
except (socket.timeout, OSError):
    print("stalled sent=%d" % sent, flush=True)
`;
}

/**
 * A test host's web server on 0.0.0.0:`port`: TCP answers `HTTP/1.0 200 OK` with body `hello` to whatever
 * it is sent first (a request head, a ClientHello); UDP echoes.
 */
export function webServerPy(port: number): string {
  return `
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", ${port})); t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", ${port}))
def serve(c):
    try:
        c.settimeout(5)
        if c.recv(65536):
            c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nhello")
    except OSError:
        pass
    c.close()
def tcp():
    while True:
        c, _ = t.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
while True:
    d, a = u.recvfrom(100)
    u.sendto(d, a)
`;
}

/**
 * A guest program: connects to host:port and sends an HTTP request with `Host: hostHeader` (`http`) or a
 * TLS ClientHello naming `hostHeader` (`tls`, none when empty); prints `reply=<first bytes>` or the error.
 */
export function nameClientPy(host: string, port: number, hostHeader: string, kind: "http" | "tls"): string {
  return `
import errno, socket, ssl
if "${kind}" == "http":
    first = b"GET / HTTP/1.1\\r\\nHost: ${hostHeader}\\r\\n\\r\\n"
else:
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(i, o, server_hostname="${hostHeader}" or None)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    first = o.read()
try:
    s = socket.create_connection(("${host}", ${port}), timeout=5)
    s.sendall(first)
    r = s.recv(100)
    print("reply=" + (r.decode("latin1").split("\\r\\n")[0] if r else "<closed>"), flush=True)
except socket.timeout:
    print("timeout", flush=True)
except OSError as e:
    print("errno:" + errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`;
}

/**
 * A guest program: one connection to host:port, on which each raw request of `requests` is sent after the
 * previous answer; prints one line per answer, `<status> <body, first 100 chars>`, then `closed` when the
 * server said it closes (or ended the body by closing), `eof` when it closed instead of answering, or the
 * error (`errno:<name>`, `timeout`). HTTP/1.1 parsed by hand: the guest's python has no http (nor json)
 * package; the requests are a JSON array, which is a python list literal too.
 */
export function httpSessionPy(host: string, port: number, requests: readonly string[]): string {
  return `
import errno, socket
def answer(f):
    line = f.readline()
    if not line:
        return None, b"", True
    h = {}
    while True:
        l = f.readline().strip().decode("latin1")
        if not l:
            break
        k, _, v = l.partition(":")
        h[k.strip().lower()] = v.strip().lower()
    close = h.get("connection") == "close" or line.startswith(b"HTTP/1.0")
    if "content-length" in h:
        body = f.read(int(h["content-length"]))
    elif h.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                f.readline()
                break
            body += f.read(n)
            f.readline()
    else:
        body, close = f.read(), True
    return int(line.split()[1]), body, close
try:
    s = socket.create_connection(("${host}", ${port}), timeout=5)
    f = s.makefile("rb")
    for req in ${JSON.stringify(requests)}:
        s.sendall(req.encode())
        status, body, close = answer(f)
        if status is None:
            print("eof", flush=True)
            break
        print(status, body.decode("latin1").strip().replace("\\n", " ")[:100], flush=True)
        if close:
            print("closed", flush=True)
            break
except socket.timeout:
    print("timeout", flush=True)
except OSError as e:
    print("errno:" + errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`;
}

/**
 * A test host: network namespace `ns` linked to the root namespace by veth `link` (`gw` on the root side,
 * `addrs` inside, one /29, no other route), running each python3 program of `programs` inside. Returns
 * its teardown (programs killed, link and namespace deleted).
 */
export function testHostNs(
  ns: string,
  link: string,
  gw: string,
  addrs: string[],
  programs: string[],
): () => void {
  execFileSync("ip", ["netns", "add", ns]);
  execFileSync("ip", ["link", "add", link, "type", "veth", "peer", "name", "pv", "netns", ns]);
  execFileSync("ip", ["addr", "add", `${gw}/29`, "dev", link]);
  execFileSync("ip", ["link", "set", link, "up"]);
  const inside = addrs.map((a) => `addr add ${a}/29 dev pv\n`).join("");
  execFileSync("ip", ["-n", ns, "-batch", "-"], { input: `link set lo up\n${inside}link set pv up\n` });
  const kids = programs.map((py) =>
    spawn("ip", ["netns", "exec", ns, "python3", "-c", py], { stdio: "ignore" }),
  );
  return () => {
    for (const k of kids) k.kill("SIGKILL");
    spawnSync("ip", ["link", "del", link], { stdio: "ignore" });
    spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  };
}

/** A python3 program: prints the source MAC of every frame `dev` takes in 2 s. */
export function vxlanSniffPy(dev: string): string {
  return `
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(("${dev}", 0)); s.settimeout(0.2)
end = time.monotonic() + 2
while time.monotonic() < end:
    try:
        f = s.recv(2000)
    except socket.timeout:
        continue
    print(f[6:12].hex(":"), flush=True)
`;
}

/**
 * A python3 program: from each source address in its arguments, one VXLAN datagram for `vni` to
 * `host`:`port` carrying a broadcast frame of a local experimental ethertype from {@link vxlanMacOf}(source).
 */
export function vxlanSendPy(vni: number, host: string, port: number): string {
  return `
import socket, struct, sys
for src in sys.argv[1:]:
    mac = bytes([2, 0]) + socket.inet_aton(src)
    inner = b"\\xff" * 6 + mac + b"\\x88\\xb5" + b"overlay test".ljust(46, b"\\0")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0))
    s.sendto(struct.pack("!II", 0x08000000, ${vni} << 8) + inner, ("${host}", ${port}))
`;
}

/** The inner source MAC {@link vxlanSendPy} uses for a datagram from `ip`: 02:00 and its four octets. */
export function vxlanMacOf(ip: string): string {
  return ["02", "00", ...ip.split(".").map((o) => Number(o).toString(16).padStart(2, "0"))].join(":");
}
