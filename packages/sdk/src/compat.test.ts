/**
 * Compile-time compatibility with `@nodeops-createos/sandbox@0.7.1`: this file only needs to
 * type-check (`tsc -b packages/sdk`). Classes with `#private` fields are nominal in TypeScript, so
 * instead of assigning class types to each other we check (1) every published export and public
 * member exists here, (2) every published method accepts our callers' arguments (published
 * parameter types are assignable to ours), (3) data results are assignable to the published types,
 * (4) the wire types are mutually assignable.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type * as P from "@nodeops-createos/sandbox";
import * as ours from "./index.js";

type Assert<T extends true> = T;
type Extends<A, B> = [A] extends [B] ? true : false;
type Mutual<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
// biome-ignore lint/suspicious/noExplicitAny: method-shape helper
type Fn = (...args: any[]) => any;
type MethodKeys<T> = { [K in keyof T]: T[K] extends Fn ? K : never }[keyof T];
/** Published parameters must be accepted by our method of the same name. */
type ParamsAccepted<Pub, Ours> = {
  [K in MethodKeys<Pub> & keyof Ours]: Pub[K] extends Fn
    ? Ours[K] extends Fn
      ? Extends<Parameters<Pub[K]>, Parameters<Ours[K]>>
      : false
    : true;
}[MethodKeys<Pub> & keyof Ours];

// (1) Value exports and public members.
type _Exports = Assert<Extends<Exclude<keyof typeof P, keyof typeof ours>, never>>;
type _SandboxMembers = Assert<Extends<Exclude<keyof P.Sandbox, keyof ours.Sandbox>, never>>;
type _ClientMembers = Assert<
  Extends<Exclude<keyof P.CreateosSandboxClient, keyof ours.CreateosSandboxClient>, never>
>;
type _FilesMembers = Assert<Extends<Exclude<keyof P.SandboxFiles, keyof ours.SandboxFiles>, never>>;
type _TemplatesMembers = Assert<Extends<Exclude<keyof P.TemplatesApi, keyof ours.TemplatesApi>, never>>;
type _NetworksMembers = Assert<Extends<Exclude<keyof P.NetworksApi, keyof ours.NetworksApi>, never>>;
type _DisksMembers = Assert<Extends<Exclude<keyof P.DisksApi, keyof ours.DisksApi>, never>>;
type _HttpMembers = Assert<
  Extends<Exclude<keyof P.CreateosSandboxHttp, keyof ours.CreateosSandboxHttp>, never>
>;
type _ApiErrorMembers = Assert<
  Extends<Exclude<keyof P.CreateosSandboxApiError, keyof ours.CreateosSandboxApiError>, never>
>;

// (2) Parameters.
type _SandboxParams = Assert<Extends<ParamsAccepted<P.Sandbox, ours.Sandbox>, true>>;
type _ClientParams = Assert<
  Extends<ParamsAccepted<P.CreateosSandboxClient, ours.CreateosSandboxClient>, true>
>;
type _FilesParams = Assert<Extends<ParamsAccepted<P.SandboxFiles, ours.SandboxFiles>, true>>;
type _TemplatesParams = Assert<Extends<ParamsAccepted<P.TemplatesApi, ours.TemplatesApi>, true>>;
type _NetworksParams = Assert<Extends<ParamsAccepted<P.NetworksApi, ours.NetworksApi>, true>>;
type _DisksParams = Assert<Extends<ParamsAccepted<P.DisksApi, ours.DisksApi>, true>>;
type _CreateClientParams = Assert<
  Extends<Parameters<typeof P.createClient>, Parameters<typeof ours.createClient>>
>;
type _CreateStatic = Assert<
  Extends<Parameters<typeof P.Sandbox.create>, Parameters<typeof ours.Sandbox.create>>
>;
type _ConnectStatic = Assert<
  Extends<Parameters<typeof P.Sandbox.connect>, Parameters<typeof ours.Sandbox.connect>>
>;
type _PollUntil = Assert<Extends<Parameters<typeof P.pollUntil>, Parameters<typeof ours.pollUntil>>>;

// (3) Data results of the handle and sub-APIs.
type R<T extends Fn> = Awaited<ReturnType<T>>;
type _Results = Assert<
  Extends<
    [
      R<ours.Sandbox["runCommand"]>,
      R<ours.Sandbox["sh"]>,
      R<ours.Sandbox["destroy"]>,
      R<ours.Sandbox["resize"]>,
      R<ours.Sandbox["addSSHPubkeys"]>,
      R<ours.Sandbox["getEgress"]>,
      R<ours.Sandbox["setEgress"]>,
      R<ours.Sandbox["getBandwidth"]>,
      R<ours.Sandbox["rechargeBandwidth"]>,
      R<ours.Sandbox["attachNetwork"]>,
      R<ours.Sandbox["listDisks"]>,
      R<ours.Sandbox["detachDisk"]>,
      ReturnType<ours.Sandbox["previewUrl"]>,
      ReturnType<ours.Sandbox["toJSON"]>,
      ours.Sandbox["data"],
      ours.Sandbox["status"],
      R<ours.CreateosSandboxClient["whoami"]>,
      R<ours.CreateosSandboxClient["listShapes"]>,
      R<ours.CreateosSandboxClient["listRootfs"]>,
      R<ours.CreateosSandboxClient["listHosts"]>,
      R<ours.CreateosSandboxClient["readyz"]>,
      R<ours.CreateosSandboxClient["healthz"]>,
      R<ours.TemplatesApi["get"]>,
      R<ours.TemplatesApi["logs"]>,
      R<ours.NetworksApi["get"]>,
      R<ours.DisksApi["list"]>,
      R<ours.DisksApi["delete"]>,
      R<ours.SandboxFiles["download"]>,
    ],
    [
      R<P.Sandbox["runCommand"]>,
      R<P.Sandbox["sh"]>,
      R<P.Sandbox["destroy"]>,
      R<P.Sandbox["resize"]>,
      R<P.Sandbox["addSSHPubkeys"]>,
      R<P.Sandbox["getEgress"]>,
      R<P.Sandbox["setEgress"]>,
      R<P.Sandbox["getBandwidth"]>,
      R<P.Sandbox["rechargeBandwidth"]>,
      R<P.Sandbox["attachNetwork"]>,
      R<P.Sandbox["listDisks"]>,
      R<P.Sandbox["detachDisk"]>,
      ReturnType<P.Sandbox["previewUrl"]>,
      ReturnType<P.Sandbox["toJSON"]>,
      P.Sandbox["data"],
      P.Sandbox["status"],
      R<P.CreateosSandboxClient["whoami"]>,
      R<P.CreateosSandboxClient["listShapes"]>,
      R<P.CreateosSandboxClient["listRootfs"]>,
      R<P.CreateosSandboxClient["listHosts"]>,
      R<P.CreateosSandboxClient["readyz"]>,
      R<P.CreateosSandboxClient["healthz"]>,
      R<P.TemplatesApi["get"]>,
      R<P.TemplatesApi["logs"]>,
      R<P.NetworksApi["get"]>,
      R<P.DisksApi["list"]>,
      R<P.DisksApi["delete"]>,
      R<P.SandboxFiles["download"]>,
    ]
  >
>;
type Yield<T> = T extends AsyncGenerator<infer Y> ? Y : never;
type _StreamEvents = Assert<
  Mutual<Yield<ReturnType<ours.Sandbox["streamCommand"]>>, Yield<ReturnType<P.Sandbox["streamCommand"]>>>
>;
type _LogEvents = Assert<
  Extends<Yield<ReturnType<ours.TemplatesApi["followLogs"]>>, Yield<ReturnType<P.TemplatesApi["followLogs"]>>>
>;

// (4) Wire and option types.
type _Wire = Assert<
  Extends<
    [
      Mutual<ours.SandboxView, P.SandboxView>,
      Mutual<ours.SandboxStatus, P.SandboxStatus>,
      Mutual<ours.Shape, P.Shape>,
      Mutual<ours.RootfsData, P.RootfsData>,
      Mutual<ours.HostPublic, P.HostPublic>,
      Mutual<ours.WhoAmIView, P.WhoAmIView>,
      Mutual<ours.BandwidthView, P.BandwidthView>,
      Mutual<ours.EgressView, P.EgressView>,
      Mutual<ours.Network, P.Network>,
      Mutual<ours.DiskView, P.DiskView>,
      Mutual<ours.SandboxDiskView, P.SandboxDiskView>,
      Mutual<ours.TemplateView, P.TemplateView>,
      Mutual<ours.ExecResponse, P.ExecResponse>,
      Mutual<ours.ExecStreamFrame, P.ExecStreamFrame>,
      Mutual<ours.ForkSandboxRequest, P.ForkSandboxRequest>,
      Mutual<ours.PatchSandboxRequest, P.PatchSandboxRequest>,
      Mutual<ours.DestroyedResponse, P.DestroyedResponse>,
      Mutual<ours.ErrorEnvelope, P.ErrorEnvelope>,
      Extends<P.CreateSandboxRequest, ours.CreateSandboxRequest>,
      Extends<P.CreateSandboxResponse, ours.CreateSandboxResponse>,
      Extends<P.FailEnvelope, ours.FailEnvelope>,
      Extends<P.ExecRequest, ours.ExecRequest>,
      Extends<P.CreateosSandboxClientOptions, ours.CreateosSandboxClientOptions>,
      Extends<P.RequestOptions, ours.RequestOptions>,
      Extends<P.WaitOptions, ours.WaitOptions>,
      Extends<P.ListSandboxesOptions, ours.ListSandboxesOptions>,
      Extends<P.RetryHookContext, ours.RetryHookContext>,
      Extends<ours.RetryHookContext, P.RetryHookContext>,
    ],
    true[]
  >
>;

// A function written against the published client type-checks when handed ours.
async function publishedStyle(client: ours.CreateosSandboxClient): Promise<string> {
  const sandbox = await client.createSandbox({ shape: "s-1vcpu-256mb", rootfs: "devbox:1" });
  const branch: Awaited<ReturnType<typeof sandbox.fork>> = await sandbox.fork({ start_paused: true });
  const out: P.ExecResponse = await sandbox.runCommand("uname", ["-a"], { timeoutMs: 1000 });
  for await (const ev of sandbox.streamCommand("ls")) if (ev.type === "exit") return String(ev.exitCode);
  const err: unknown = undefined;
  if (err instanceof ours.CreateosSandboxRateLimitError) return String(err.retryAfterSeconds);
  return `${branch.id} ${out.result.stdout}`;
}

test("type-level compatibility with @nodeops-createos/sandbox@0.7.1 compiles", async () => {
  assert.equal(typeof publishedStyle, "function");
  const published = await import("@nodeops-createos/sandbox");
  // The same value exports exist at run time, too.
  const missing = Object.keys(published).filter((k) => !(k in ours));
  assert.deepEqual(missing, []);
});
