/**
 * The SDK is loaded lazily so `--help`, `completion`, usage errors and `logout` never pay for its
 * HTTP stack at start-up; only the types are imported statically.
 */
import type * as Sdk from "@createos-sandbox/sdk";

export type {
  BandwidthView,
  CreateSandboxRequest,
  DiskView,
  EgressView,
  ExecStreamEvent,
  Network,
  NetworkMember,
  RootfsData,
  Sandbox,
  SandboxDiskView,
  SandboxStatus,
  SandboxView,
  Shape,
  TemplateLogEvent,
  TemplateView,
} from "@createos-sandbox/sdk";

export type Client = Sdk.CreateosSandboxClient;
export type SdkModule = typeof Sdk;

export async function loadSdk(): Promise<SdkModule> {
  return import("@createos-sandbox/sdk");
}
