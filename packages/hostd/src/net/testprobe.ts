/**
 * Test helper (registers no test): a connection prober that runs with python3 in a guest or in a test
 * namespace, and what the firewall tests expect of its answers. Each target is `kind:host[:port[:src]]`
 * with kind tcp, udp (expects an echo) or icmp (an echo request); `src` binds the socket to that address,
 * for spoofing. One line per target: `<target> <outcome> <seconds>`, where the outcome is `open`,
 * `timeout`, `errno:<name>` (the socket's error) or `icmp:<type>/<code>` (an ICMP error to our echo).
 */
export const PROBE_PY = `
import errno, os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
def probe(kind, host, port, src):
    if kind == "tcp":
        s = socket.socket()
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(3)
    if src:
        s.bind((src, 0))
    if kind == "tcp":
        s.connect((host, port))
        return "open"
    if kind == "udp":
        s.connect((host, port))
        s.send(b"ping")
        return "open" if s.recv(100) == b"ping" else "garbled"
    ident = os.getpid() & 0xffff
    h = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    s.sendto(struct.pack("!BBHHH", 8, 0, csum(h), ident, 1), (host, 0))
    while True:
        d, a = s.recvfrom(2000)
        o = (d[0] & 15) * 4
        if d[o] == 0 and a[0] == host:
            return "open"
        if d[o] == 3 and socket.inet_ntoa(d[o + 24:o + 28]) == host:
            return "icmp:%d/%d" % (d[o], d[o + 1])
for t in sys.argv[1:]:
    kind, host, port, src = (t.split(":") + ["", "", ""])[:4]
    t0 = time.monotonic()
    try:
        r = probe(kind, host, int(port or 0), src)
    except socket.timeout:
        r = "timeout"
    except OSError as e:
        r = "errno:" + errno.errorcode.get(e.errno, str(e.errno))
    print("%s %s %.3f" % (t, r, time.monotonic() - t0), flush=True)
`;

export interface ProbeResult {
  target: string;
  outcome: string;
  seconds: number;
}

export function parseProbe(stdout: string): ProbeResult[] {
  return stdout
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const [target = "", outcome = "", s = "NaN"] = l.split(" ");
      return { target, outcome, seconds: Number(s) };
    });
}

/** How the firewall refuses each kind of probe: a reset, or ICMP admin-prohibited (type 3 code 13). */
export const REFUSED: Record<string, string> = {
  tcp: "errno:ECONNREFUSED",
  udp: "errno:EHOSTUNREACH",
  icmp: "icmp:3/13",
};

/** Refusals must be answers, not timeouts: well under the probe's own 3 s timeout. */
export const FAST_S = 2;

/** Asserts every result is the firewall's refusal, in under {@link FAST_S}; returns the failures. */
export function notRefused(results: ProbeResult[]): string[] {
  return results
    .filter((r) => r.outcome !== REFUSED[r.target.split(":")[0] ?? ""] || !(r.seconds < FAST_S))
    .map((r) => `${r.target} → ${r.outcome} in ${r.seconds} s`);
}

export function notOpen(results: ProbeResult[]): string[] {
  return results
    .filter((r) => r.outcome !== "open")
    .map((r) => `${r.target} → ${r.outcome} in ${r.seconds} s`);
}

/** A python3 TCP + UDP echo server on 0.0.0.0:`port` (for a test namespace or a guest). */
export function echoServerPy(port: number): string {
  return `
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", ${port})); t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", ${port}))
def tcp():
    while True:
        c, _ = t.accept(); c.close()
threading.Thread(target=tcp, daemon=True).start()
while True:
    d, a = u.recvfrom(100)
    try:
        u.sendto(d, a)
    except OSError:
        pass  # a source it cannot answer (a spoofed one that got through): the test reports that
`;
}

/**
 * A python3 program: a TCP connect to each `[addr%dev]:port` argument (IPv6, `dev` naming a link-local
 * address's interface); one line per target, `<target> <outcome> <seconds>` as {@link PROBE_PY} prints.
 */
export const PROBE6_PY = `
import errno, socket, sys, time
for t in sys.argv[1:]:
    host, port = t[1:].split("]:")
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, int(port)), timeout=3)
        s.close()
        r = "open"
    except socket.timeout:
        r = "timeout"
    except OSError as e:
        r = "errno:" + errno.errorcode.get(e.errno, str(e.errno))
    print("%s %s %.3f" % (t, r, time.monotonic() - t0), flush=True)
`;

/** A python3 TCP listener on [::]:`port` (IPv6 only) that accepts and closes each connection. */
export function listen6Py(port: number): string {
  return `
import socket
t = socket.socket(socket.AF_INET6); t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("::", ${port})); t.listen(16)
while True:
    c, _ = t.accept(); c.close()
`;
}
