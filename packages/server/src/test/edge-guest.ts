/**
 * Servers the edge test runs inside the guest (python3, standard library only): on 8001 `/headers` answers
 * the request head it received, `/sse` sends three events 400 ms apart and `/upload` reads a
 * Content-Length body and answers its size; 8002 is a WebSocket echo (text
 * frames, unmasked server side); 8003 accepts and never answers.
 */
export const GUEST_SERVERS = String.raw`
import base64, hashlib, socket, threading, time

def serve(port, handle):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()

def read_head(c, rest=None):
    d = b""
    while b"\r\n\r\n" not in d:
        x = c.recv(4096)
        if not x:
            break
        d += x
    head, _, more = d.partition(b"\r\n\r\n")
    if rest is not None:
        rest.append(more)
    return head.decode()

def http8001(c):
    rest = []
    head = read_head(c, rest)
    path = head.split(" ")[1] if " " in head else "/"
    if path == "/upload":
        want = int([l.split(":", 1)[1] for l in head.split("\r\n") if l.lower().startswith("content-length:")][0])
        got = len(rest[0])
        while got < want:
            x = c.recv(65536)
            if not x:
                break
            got += len(x)
        body = ("got %d" % got).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    elif path == "/sse":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")
        for i in range(3):
            c.sendall(("data: tick %d\n\n" % i).encode())
            time.sleep(0.4)
    else:
        body = head.encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    c.close()

def recv_exact(c, n):
    d = b""
    while len(d) < n:
        x = c.recv(n - len(d))
        if not x:
            raise EOFError
        d += x
    return d

def ws8002(c):
    head = read_head(c)
    key = [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("sec-websocket-key:")][0]
    acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % acc).encode())
    try:
        while True:
            b0, b1 = recv_exact(c, 2)
            n = b1 & 127
            if n == 126:
                n = int.from_bytes(recv_exact(c, 2), "big")
            elif n == 127:
                n = int.from_bytes(recv_exact(c, 8), "big")
            mask = recv_exact(c, 4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(recv_exact(c, n)))
            if b0 & 15 == 8:
                c.sendall(b"\x88\x00")
                break
            out = b"echo: " + data
            c.sendall(bytes([0x81, len(out)]) + out if len(out) < 126 else bytes([0x81, 126]) + len(out).to_bytes(2, "big") + out)
    except EOFError:
        pass
    c.close()

def hang8003(c):
    time.sleep(3600)

for port, h in ((8001, http8001), (8002, ws8002), (8003, hang8003)):
    threading.Thread(target=serve, args=(port, h), daemon=True).start()
while True:
    time.sleep(3600)
`;
