/**
 * The request series of metrics.ts: requests are counted in batches (at scrape time or every 256), and a
 * batch must count exactly what a per-request count would — per series, across batch boundaries.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Metrics } from "../metrics.js";

const series = (text: string, name: string) =>
  Object.fromEntries(
    [...text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\d+)$`, "gm"))].map((m) => [m[1], Number(m[2])]),
  );

test("request counts and latency counts are exact per series, across batches and scrapes", async () => {
  const m = new Metrics();
  // 700 requests: over two full batches of 256 and a tail counted at the scrape.
  for (let i = 0; i < 700; i++) m.request(i % 3 === 0 ? "/a" : "/b", "GET", i % 7 === 0 ? 404 : 200, 0.002);
  m.request("/a", "POST", 201, 0.5);
  const text = await m.render({}, {});
  const want: Record<string, number> = {};
  for (let i = 0; i < 700; i++) {
    const k = `route="${i % 3 === 0 ? "/a" : "/b"}",method="GET",status="${i % 7 === 0 ? 404 : 200}"`;
    want[k] = (want[k] ?? 0) + 1;
  }
  want['route="/a",method="POST",status="201"'] = 1;
  assert.deepEqual(series(text, "createos_http_requests_total"), want);
  const counts = series(text, "createos_http_request_duration_seconds_count");
  assert.deepEqual(counts, {
    'route="/a",method="GET"': 234,
    'route="/b",method="GET"': 466,
    'route="/a",method="POST"': 1,
  });
  // A second scrape adds only what came since.
  m.request("/a", "POST", 201, 0.5);
  const again = series(await m.render({}, {}), "createos_http_requests_total");
  assert.equal(again['route="/a",method="POST",status="201"'], 2);
  assert.equal(again['route="/b",method="GET",status="200"'], want['route="/b",method="GET",status="200"']);
});
