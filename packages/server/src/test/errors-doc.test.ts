/** docs/errors.md and ERROR_CATALOG must describe the same table. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { ERROR_CATALOG, type ErrorSpec } from "@createos-sandbox/protocol";

const DOC = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "docs", "errors.md");

test("docs/errors.md lists exactly the catalog, row for row", () => {
  const rows = readFileSync(DOC, "utf8")
    .split("\n")
    .filter((l) => /^\| `[a-z_]+` \|/.test(l))
    .map((l) =>
      l
        .slice(1, -1)
        .split(" | ")
        .map((c) => c.trim()),
    );
  const fromDoc = Object.fromEntries(
    rows.map(([code, status, envelope, field, message, retry]) => [
      code!.replace(/`/g, ""),
      { status: Number(status), envelope, field, message, retry: retry ?? "" },
    ]),
  );
  const fromCode = Object.fromEntries(
    Object.entries(ERROR_CATALOG as Record<string, ErrorSpec>).map(([code, s]) => [
      code,
      {
        status: s.status,
        envelope: s.status < 500 ? "fail" : "error",
        field: s.field === "" ? "—" : s.field === "*" ? "*(each invalid field)*" : `\`${s.field}\``,
        message: s.message,
        retry: s.retryAfter === undefined ? "" : String(s.retryAfter),
      },
    ]),
  );
  assert.deepEqual(fromDoc, fromCode);
});
