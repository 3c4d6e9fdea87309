/**
 * What a JSON route answers for each kind of body, against the real program: an empty body is no body
 * whatever its content type, only JSON types are parsed, a malformed one is named with the parser's words,
 * an over-limit one is refused before it is read (declared) or as soon as it passes the limit (chunked).
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { type ServerProc, call, cleanup, startProc } from "./helpers.js";

let s: ServerProc;
before(async () => {
  s = await startProc({ env: { CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0" } });
});
after(async () => {
  await s.stop();
  cleanup(s.dataDir);
});

/** `head` sent at once, then `chunks` one by one while the connection lasts; everything the server wrote. */
function exchange(head: string, chunks: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(s.port, "127.0.0.1", () => {
      sock.write(head);
      for (const c of chunks) if (!sock.destroyed) sock.write(c);
    });
    let out = "";
    sock.on("data", (d) => {
      out += d;
    });
    sock.on("error", () => undefined);
    sock.on("close", () => resolve(out));
    setTimeout(() => reject(new Error(`no close; got ${out}`)), 10_000).unref();
  });
}

const post = (headers: Record<string, string>, raw?: string) =>
  call(s.url, "POST", "/v1/networks", {
    key: s.adminKey,
    headers,
    ...(raw === undefined ? {} : { raw }),
  });
const NAME_REQUIRED = { name: "name is required" };

describe("JSON bodies", () => {
  it("an empty body is no body, whatever its content type", async () => {
    for (const ct of ["text/plain", "application/json", "image/png"]) {
      const r = await post({ "content-type": ct }, "");
      assert.equal(r.status, 400, ct);
      assert.deepEqual(r.json.data, NAME_REQUIRED, ct);
    }
    assert.deepEqual((await post({})).json.data, NAME_REQUIRED);
    const chunked = await exchange(
      `POST /v1/networks HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`,
    );
    assert.match(chunked, /^HTTP\/1.1 400 /);
    assert.match(chunked, /"data":\{"name":"name is required"\}/);
  });

  it("JSON types, with parameters and +json suffixes, are parsed; others are refused naming the type", async () => {
    for (const ct of ["application/json; charset=utf-8", "application/vnd.api+json", "APPLICATION/JSON"]) {
      const r = await post({ "content-type": ct }, '{"name":"Bad Name"}');
      assert.equal(r.status, 400, ct);
      assert.deepEqual(Object.keys(r.json.data), ["name"], ct);
      assert.notDeepEqual(r.json.data, NAME_REQUIRED, ct);
    }
    const text = await post({ "content-type": "text/plain" }, '{"name":"n1"}');
    assert.equal(text.status, 400);
    assert.deepEqual(text.json.data, { "content-type": "expected application/json, got text/plain" });
    // fetch would add text/plain to a string body
    const none = await exchange(
      `POST /v1/networks HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
    );
    assert.match(none, /^HTTP\/1.1 400 /);
    assert.match(none, /"data":\{"content-type":"expected application\/json, got none"\}/);
    const long = await post({ "content-type": `text/${"x".repeat(200)}` }, "{}");
    assert.deepEqual(long.json.data, {
      "content-type": `expected application/json, got ${`text/${"x".repeat(200)}`.slice(0, 100)}`,
    });
  });

  it("malformed JSON is refused with the parser's words", async () => {
    const r = await post({ "content-type": "application/json" }, "{nope");
    assert.equal(r.status, 400);
    let detail = "";
    try {
      JSON.parse("{nope");
    } catch (e) {
      detail = (e as Error).message;
    }
    assert.deepEqual(r.json.data, { body: `malformed JSON: ${detail}` });
    const proto = await post(
      { "content-type": "application/json" },
      '{"__proto__":{"x":1},"name":"Bad Name"}',
    );
    assert.deepEqual(Object.keys(proto.json.data), ["name"], "a __proto__ key is only a key");
  });

  it("over the limit: refused before reading when declared, as soon as it passes the limit when chunked", async () => {
    const declared = await exchange(
      `POST /v1/networks HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nContent-Type: application/json\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`,
    );
    assert.match(declared, /^HTTP\/1.1 413 /);
    assert.match(declared, /connection: close/i);
    assert.match(declared, /"body":"request body exceeds 1048576 bytes"/);
    const piece = "x".repeat(64 * 1024);
    const chunk = `${piece.length.toString(16)}\r\n${piece}\r\n`;
    const chunked = await exchange(
      `POST /v1/networks HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${s.adminKey}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
      Array.from({ length: 20 }, () => chunk),
    );
    assert.match(chunked, /^HTTP\/1.1 413 /);
    assert.match(chunked, /connection: close/i);
  });
});
