/**
 * Prompt rendering helpers: a list row never wraps (the redraw moves the cursor up one line per row).
 *   node --test packages/cli/dist/test/prompt.test.js
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { clip } from "../ui/prompt.js";

test("clip keeps what fits and marks a cut with …", () => {
  assert.equal(clip("short", 10), "short");
  assert.equal(clip("exactly10!", 10), "exactly10!");
  assert.equal(clip("a longer hint than that", 10), "a longer …");
  assert.equal(clip("a longer hint than that", 10).length, 10);
  assert.equal(clip("anything", 1), "");
  assert.equal(clip("anything", -5), "");
});
