import assert from "node:assert/strict";
import { test } from "node:test";
import { redactHeaders, redactSecrets, redactUrl } from "./redact.js";

test("redactHeaders hides credentials, including custom *-token/*-key headers", () => {
  const out = redactHeaders({
    "X-Api-Key": "skp_123",
    Authorization: "Bearer x",
    "X-Session-Token": "t",
    "X-Custom-Key": "k",
    Accept: "application/json",
  });
  assert.deepEqual(out, {
    accept: "application/json",
    authorization: "redacted",
    "x-api-key": "redacted",
    "x-custom-key": "redacted",
    "x-session-token": "redacted",
  });
});

test("redactUrl strips user-info and credential query params", () => {
  assert.equal(
    redactUrl("https://u:p@h.example/v1/x?token=abc&path=/etc&api_key=z"),
    "https://h.example/v1/x?token=redacted&path=%2Fetc&api_key=redacted",
  );
  assert.equal(redactUrl("not a url"), "not a url");
});

test("redactSecrets removes API keys, JWTs and explicit secrets", () => {
  const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_nature-x";
  const text = `key skp_live_ABCdef-123 and ${jwt} and mysecretvalue`;
  const out = redactSecrets(text, ["mysecretvalue", "ab"]);
  assert.equal(out, "key redacted and redacted and redacted");
});
