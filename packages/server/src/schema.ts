/**
 * Request schemas: bodies and queries are JSON Schemas (TypeBox, so each route's types are derived from its
 * schema) that Fastify compiles with the Ajv here. Every failure is rendered in one place (`compileSchema`): a
 * field-level 400 whose keys and messages are the API's (docs/errors.md), the first failure of each field,
 * all fields at once, in the order of the schema's properties.
 *
 * The builders below (`str`, `int`, `bool`, `strings`, `envs`) make the schemas of the field kinds the API
 * has, with their messages under `x-msg` (by Ajv keyword; `present` for a required field that is absent,
 * `null` or `""`). Absent, `null` and (for strings) `""` mean "not given", as clients send all three.
 */
import { type ApiError, validationError } from "@createos-sandbox/protocol";
import { type TOptional, type TSchema, type TUnsafe, Type } from "@sinclair/typebox";
import { Ajv, type ErrorObject } from "ajv";
import { checkEnvs, dockerfileError, egressRuleError, sshKeyError } from "./validate.js";

const text = (f: (v: string) => string | undefined) => (v: unknown) =>
  typeof v === "string" ? f(v) : undefined;
const httpUrl = (v: string) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol);

/** Grammars a pattern cannot state; each returns the client's message for the first thing wrong, or undefined. */
const GRAMMARS: Record<string, (v: unknown, field: string) => string | undefined> = {
  egress: text(egressRuleError),
  sshKey: text(sshKeyError),
  httpUrl: text((v) => (httpUrl(v) ? undefined : "endpoint must be an http(s) URL")),
  dockerfile: text(dockerfileError),
  envs: checkEnvs,
};

/**
 * `unicode: false`: lengths in UTF-16 units, as the API has always counted them. Ajv's order is the order
 * failures are reported in: property by property, item by item; in one value `type`, then keywords of any
 * type (`present`, `safeInt`, `not`, `enum`), then those of the value's type in order (`maximum`,
 * `maxLength`, `pattern`, … and last the typed `grammar`). `useDefaults`: a required property's `default:
 * null`, which its schema refuses, makes a missing one fail where the schema has it (Ajv's `required` would
 * report every missing property of an object before the others).
 */
const ajv = new Ajv({
  allErrors: true,
  strict: false,
  verbose: true,
  useDefaults: true,
  unicode: false,
  // Ajv warns once that `unicode` is deprecated; it still counts by it, and the warning is not the log's.
  logger: { log: () => undefined, warn: () => undefined, error: console.error },
});
ajv.addKeyword({
  keyword: "present",
  validate: (_: boolean, v: unknown) => v !== null && v !== "",
});
// JSON Schema's `integer` takes 2^60; our integers are the ones a JavaScript number holds exactly.
ajv.addKeyword({
  keyword: "safeInt",
  validate: (_: boolean, v: unknown) => typeof v !== "number" || Number.isSafeInteger(v),
});
ajv.addKeyword({
  keyword: "grammar",
  type: ["string", "object"],
  errors: true,
  validate: function grammar(
    this: unknown,
    name: string,
    v: unknown,
    _parent?: unknown,
    cx?: { parentDataProperty?: string | number },
  ) {
    const message = GRAMMARS[name]!(v, String(cx?.parentDataProperty));
    if (message === undefined) return true;
    (grammar as { errors?: unknown[] }).errors = [{ keyword: "grammar", message, params: {} }];
    return false;
  },
});

/** The message for one Ajv failure, and the field it is reported under. */
function describe(e: ErrorObject): [field: string, message: string] {
  // Array indices are not part of a field's name: a bad egress rule is reported under `egress`.
  const path = e.instancePath
    .split("/")
    .slice(1)
    .filter((s) => !/^\d+$/.test(s));
  // `x-at`: the key the failure is reported under, where it is not the value's path.
  const schema = e.parentSchema as { "x-msg"?: string | Record<string, string>; "x-at"?: string } | undefined;
  const name = path.at(-1) ?? "body";
  const field = schema?.["x-at"] ?? (path.join(".") || "body");
  const msgs = schema?.["x-msg"];
  // A grammar's failure carries its own message (and Ajv gives it no parentSchema).
  if (e.keyword === "grammar") return [field, e.message!];
  const custom = typeof msgs === "string" ? msgs : msgs?.[e.keyword];
  if (custom) return [field, custom.replace("{value}", String(e.data).slice(0, 50))];
  return [field, e.keyword === "present" ? `${name} is required` : `${name} ${e.message ?? "is invalid"}`];
}

/** Field failures in the order of the schema's properties (nested fields under their top-level one). */
export function orderedFailure(fields: Record<string, string>, order: string[]): ApiError {
  const rank = (k: string) => {
    const i = order.indexOf(k.split(".")[0]!);
    return i === -1 ? (k === "body" ? -1 : order.length) : i;
  };
  const keys = Object.keys(fields).sort((a, b) => rank(a) - rank(b));
  return validationError(Object.fromEntries(keys.map((k) => [k, fields[k]!])));
}

interface Props {
  properties?: Record<string, Props & { default?: unknown }>;
  required?: string[];
  items?: Props;
}
/** A schema whose required property would be reported first (no `default: null`) is refused at start. */
function nullDefaults(s: Props): void {
  for (const [k, p] of Object.entries(s.properties ?? {})) {
    if (s.required?.includes(k) && p.default !== null) throw new Error(`required ${k} without default: null`);
    nullDefaults(p);
  }
  if (s.items) nullDefaults(s.items);
}

/**
 * Fastify's validator compiler: a schema → a validator answering `{ value }` or `{ error }` with our 400. A
 * body that is absent or `null` is validated (and handed on) as `{}`; one that is not an object fails with
 * `body`, and its required fields are reported as missing beside it.
 */
export function compileSchema(schema: TSchema, part: string): (data: unknown) => object {
  nullDefaults(schema as Props);
  const v = ajv.compile(schema);
  const isBody = part === "body";
  return (data) => {
    const value = isBody && (data === undefined || data === null) ? {} : data;
    const notObject = isBody && (typeof value !== "object" || Array.isArray(value));
    if (v(notObject ? {} : value) && !notObject) return { value };
    const out: Record<string, string> = notObject ? { body: "request body must be a JSON object" } : {};
    for (const e of v.errors ?? []) {
      // `if` only says its `then` failed; the failures of the `then` are the ones to report.
      if (e.keyword === "if") continue;
      const [field, message] = describe(e);
      out[field] ??= message;
    }
    return { error: validationError(out) };
  };
}

export interface StrOpts {
  required?: boolean;
  max?: number;
  re?: RegExp;
  /** The message when `re` does not match. */
  reMsg?: string;
  /** The message of every failure of this field. */
  msg?: string;
  /** Reported under this key rather than the field's path. */
  at?: string;
}

export type Req<T> = TUnsafe<T>;
export type Opt<T> = TOptional<TUnsafe<T | null>>;

/** The schema, required (`present`, absent read as `null`) or optional; `null` is allowed by its type either way. */
function given<T>(schema: Record<string, unknown>, required?: boolean): Req<T> | Opt<T> {
  return required
    ? Type.Unsafe<T>({ ...schema, present: true, default: null })
    : Type.Optional(Type.Unsafe<T | null>(schema));
}

/** A string; `""` is "not given" (a pattern is only tried on a non-empty one). */
export function str(name: string, o: StrOpts & { required: true }): Req<string>;
export function str(name: string, o?: StrOpts): Opt<string>;
export function str(name: string, o: StrOpts = {}): Req<string> | Opt<string> {
  const schema = {
    type: ["string", "null"],
    ...(o.max !== undefined ? { maxLength: o.max } : {}),
    ...(o.re ? { pattern: `^$|${o.re.source}` } : {}),
    ...(o.at ? { "x-at": o.at } : {}),
    "x-msg": o.msg ?? {
      type: `${name} must be a string`,
      maxLength: `${name} must be at most ${o.max} characters`,
      pattern: o.reMsg ?? `${name} has an invalid format`,
      present: `${name} is required`,
    },
  };
  return given<string>(schema, o.required);
}

export interface IntOpts {
  required?: boolean;
  min?: number;
  max?: number;
  /** The message when the value is outside [min, max]. */
  rangeMsg?: string;
  /** A schema the value must not match, and the message when it does. */
  not?: [object, string];
}

export function int(name: string, o: IntOpts & { required: true }): Req<number>;
export function int(name: string, o?: IntOpts): Opt<number>;
export function int(name: string, o: IntOpts = {}): Req<number> | Opt<number> {
  const range = o.rangeMsg ?? `${name} must be between ${o.min ?? "-∞"} and ${o.max ?? "∞"}`;
  const type = `${name} must be an integer`;
  const schema = {
    type: ["integer", "null"],
    safeInt: true,
    ...(o.min !== undefined ? { minimum: o.min } : {}),
    ...(o.max !== undefined ? { maximum: o.max } : {}),
    ...(o.not ? { not: o.not[0] } : {}),
    "x-msg": { type, safeInt: type, minimum: range, maximum: range, ...(o.not ? { not: o.not[1] } : {}) },
  };
  return given<number>(schema, o.required);
}

export const bool = (name: string): Opt<boolean> =>
  given<boolean>({ type: ["boolean", "null"], "x-msg": `${name} must be true or false` }) as Opt<boolean>;

/** An array of strings, each checked by a grammar (GRAMMARS) when given one. */
export function strings(
  name: string,
  o: { max: number; grammar?: string; required?: boolean; emptyMsg?: string },
): Opt<string[]> {
  const type = `${name} must be an array of strings`;
  const empty = o.emptyMsg ? { minItems: 1 } : {};
  const schema = {
    type: ["array", "null"],
    maxItems: o.max,
    ...empty,
    items: { type: "string", ...(o.grammar ? { grammar: o.grammar } : {}), "x-msg": type },
    "x-msg": {
      type,
      maxItems: `${name} may hold at most ${o.max} entries`,
      ...(o.emptyMsg ? { minItems: o.emptyMsg, present: o.emptyMsg } : {}),
    },
  };
  return given<string[]>(schema, o.required) as Opt<string[]>;
}

export const envs = (name: string): Opt<Record<string, string>> =>
  given<Record<string, string>>({
    type: ["object", "null"],
    grammar: "envs",
    "x-msg": { type: `${name} must be an object of KEY: "value"` },
  }) as Opt<Record<string, string>>;
