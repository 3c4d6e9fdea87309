import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { Output } from "../framework/output.js";
import { makeStyle, visibleLength } from "./style.js";
import { formatBytes, formatMib, relativeTime, renderKeyValues, renderTable } from "./table.js";

function fakeStreams(tty: boolean) {
  const mk = () => Object.assign(new PassThrough(), { isTTY: tty }) as unknown as NodeJS.WriteStream;
  const out = { stdout: mk(), stderr: mk(), stdin: new PassThrough() as unknown as NodeJS.ReadStream };
  const read = (s: NodeJS.WriteStream) => ((s as unknown as PassThrough).read() ?? "").toString();
  return { out, read };
}

describe("tables", () => {
  it("aligns columns, upper-cases headers and right-aligns numbers", () => {
    const t = renderTable(
      [
        { header: "id", get: (r: { id: string; n: number }) => r.id },
        { header: "count", get: (r) => String(r.n), right: true },
      ],
      [
        { id: "sb-1", n: 5 },
        { id: "sb-22", n: 100 },
      ],
    );
    assert.equal(t, "ID     COUNT\nsb-1       5\nsb-22    100\n");
  });

  it("measures width without colour codes", () => {
    const s = makeStyle(true);
    assert.equal(visibleLength(s.green("running")), 7);
    const t = renderTable([{ header: "s", get: (r: string) => r }], [s.green("run"), "paused"]);
    assert.equal(t.split("\n")[1], `${s.green("run")}`);
  });

  it("prints key/value details, skipping empty values", () => {
    assert.equal(
      renderKeyValues([
        ["ID", "sb-1"],
        ["Name", undefined],
        ["Status", "running"],
      ]),
      "ID:      sb-1\nStatus:  running\n",
    );
  });

  it("formats sizes and ages", () => {
    assert.equal(formatBytes(512), "512 B");
    assert.equal(formatBytes(5 * 1024 ** 3), "5.0 GiB");
    assert.equal(formatMib(10240), "10 GiB");
    assert.equal(formatMib(256), "256 MiB");
    const now = Date.parse("2026-01-01T01:00:00Z");
    assert.equal(relativeTime("2026-01-01T00:57:00Z", now), "3m ago");
    assert.equal(relativeTime("2025-12-30T01:00:00Z", now), "2d ago");
  });
});

describe("Output", () => {
  it("defaults to JSON when stdout is not a terminal", () => {
    const { out, read } = fakeStreams(false);
    const o = new Output(out, { output: undefined, noColor: false });
    assert.equal(o.json, true);
    assert.equal(o.explicitJson, false);
    o.result([{ id: "sb-1" }], () => "human");
    assert.deepEqual(JSON.parse(read(out.stdout)), [{ id: "sb-1" }]);
  });

  it("renders human text on a terminal, with colour unless NO_COLOR", () => {
    const { out, read } = fakeStreams(true);
    const o = new Output(out, { output: undefined, noColor: false });
    assert.equal(o.json, false);
    assert.equal(o.style.enabled, true);
    o.result({ id: "x" }, () => "hello");
    assert.equal(read(out.stdout), "hello\n");
    assert.equal(new Output(out, { output: undefined, noColor: true }).style.enabled, false);
  });

  it("--output wins over the terminal check", () => {
    const { out } = fakeStreams(true);
    const o = new Output(out, { output: "json", noColor: false });
    assert.equal(o.json, true);
    assert.equal(o.explicitJson, true);
    assert.equal(new Output(fakeStreams(false).out, { output: "table", noColor: false }).json, false);
  });
});
