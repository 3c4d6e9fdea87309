import assert from "node:assert/strict";
import { test } from "node:test";
import { EMPTY_SHA256, amzDate, signV4 } from "./sigv4.js";

test("AWS SigV4 test suite: get-vanilla", () => {
  const auth = signV4(
    {
      method: "GET",
      path: "/",
      query: "",
      headers: { host: "example.amazonaws.com", "x-amz-date": "20150830T123600Z" },
      payloadHash: EMPTY_SHA256,
    },
    {
      accessKey: "AKIDEXAMPLE",
      secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
      region: "us-east-1",
      service: "service",
    },
  );
  assert.equal(
    auth,
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
  );
});

test("AWS S3 documentation example: GET Object with a Range header", () => {
  const auth = signV4(
    {
      method: "GET",
      path: "/test.txt",
      query: "",
      headers: {
        Host: "examplebucket.s3.amazonaws.com",
        Range: "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": "20130524T000000Z",
      },
      payloadHash: EMPTY_SHA256,
    },
    {
      accessKey: "AKIAIOSFODNN7EXAMPLE",
      secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      region: "us-east-1",
      service: "s3",
    },
  );
  assert.match(auth, /SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, /);
  assert.match(auth, /Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41$/);
});

test("AWS S3 documentation example: GET Bucket lifecycle and list with a query", () => {
  const key = {
    accessKey: "AKIAIOSFODNN7EXAMPLE",
    secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    region: "us-east-1",
    service: "s3",
  };
  const headers = {
    host: "examplebucket.s3.amazonaws.com",
    "x-amz-content-sha256": EMPTY_SHA256,
    "x-amz-date": "20130524T000000Z",
  };
  const list = signV4(
    { method: "GET", path: "/", query: "max-keys=2&prefix=J", headers, payloadHash: EMPTY_SHA256 },
    key,
  );
  assert.match(list, /Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/);
  const lc = signV4(
    { method: "GET", path: "/", query: "lifecycle", headers, payloadHash: EMPTY_SHA256 },
    key,
  );
  assert.match(lc, /Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543$/);
});

test("amzDate is the basic ISO 8601 form", () => {
  assert.equal(amzDate(new Date("2013-05-24T00:00:00.123Z")), "20130524T000000Z");
});
