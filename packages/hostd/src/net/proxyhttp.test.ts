import assert from "node:assert/strict";
import { test } from "node:test";
import { endToEnd } from "@createos-sandbox/protocol/http-relay";
import { hostName, requestName } from "./proxyhttp.js";

const req = (url: string, ...hosts: string[]) => ({ url, rawHeaders: hosts.flatMap((h) => ["Host", h]) });

test("the host name of a Host header: port and trailing dot stripped, nothing but a name", () => {
  assert.equal(hostName(" Web-A.test:8080 "), "web-a.test");
  assert.equal(hostName("web-b.test."), "web-b.test");
  assert.equal(hostName("[::1]:80"), undefined);
  assert.equal(hostName("a.test b.test"), undefined);
  assert.equal(hostName("a..test"), undefined);
  assert.equal(hostName(""), undefined);
});

test("a request names one host: one Host header, and an absolute target only for that host", () => {
  assert.deepEqual(requestName(req("/x?y", "a.test")), { name: "a.test", path: "/x?y" });
  assert.deepEqual(requestName(req("*", "a.test")), { name: "a.test", path: "*" });
  assert.deepEqual(requestName(req("http://A.test:80/p?q", "a.test")), { name: "a.test", path: "/p?q" });
  assert.deepEqual(requestName(req("http://a.test?q", "a.test")), { name: "a.test", path: "/?q" });
  const why = (r: ReturnType<typeof requestName>) => ("why" in r ? r.why : `allowed: ${JSON.stringify(r)}`);
  assert.match(why(requestName(req("/"))), /no Host header/);
  assert.match(why(requestName(req("/", "a.test", "b.test"))), /more than one Host header/);
  assert.match(why(requestName(req("/", "a.test", "a.test"))), /more than one Host header/);
  assert.match(why(requestName(req("/", "a.test b.test"))), /is not a host name/);
  assert.match(why(requestName(req("http://b.test/", "a.test"))), /names another host than the Host header/);
  assert.match(why(requestName(req("http://a.test@b.test/", "a.test"))), /names another host/);
  assert.match(why(requestName(req("http://b.test@a.test/", "a.test"))), /names another host/, "userinfo");
  assert.match(why(requestName(req("https://a.test/", "a.test"))), /neither a path nor an http:\/\/ URL/);
  assert.match(why(requestName(req("a.test:80", "a.test"))), /neither a path/);
});

test("hop-by-hop headers, and those Connection names, stay at the proxy", () => {
  assert.deepEqual(
    endToEnd([
      "Host",
      "a",
      "Connection",
      "keep-alive, X-Hop",
      "X-Hop",
      "1",
      "Keep-Alive",
      "t=5",
      "X-End",
      "2",
    ]),
    ["Host", "a", "X-End", "2"],
  );
});
