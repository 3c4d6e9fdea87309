import { randomInt } from "node:crypto";
import type { api } from "@createos-sandbox/protocol";

export const DEFAULT_DISK_MIB = 10240;

export const SHAPES: readonly api.Shape[] = [
  { id: "s-1vcpu-256mb", vcpu: 1, mem_mib: 256, default_disk_mib: DEFAULT_DISK_MIB },
  { id: "s-1vcpu-512mb", vcpu: 1, mem_mib: 512, default_disk_mib: DEFAULT_DISK_MIB },
  { id: "s-1vcpu-1gb", vcpu: 1, mem_mib: 1024, default_disk_mib: DEFAULT_DISK_MIB },
  { id: "s-2vcpu-2gb", vcpu: 2, mem_mib: 2048, default_disk_mib: DEFAULT_DISK_MIB },
  { id: "s-2vcpu-4gb", vcpu: 2, mem_mib: 4096, default_disk_mib: DEFAULT_DISK_MIB },
  { id: "s-4vcpu-4gb", vcpu: 4, mem_mib: 4096, default_disk_mib: DEFAULT_DISK_MIB },
];

export const shapeById = (id: string): api.Shape | undefined => SHAPES.find((s) => s.id === id);

export interface RootfsInfo {
  name: string;
  description: string;
  default?: boolean;
}

/** What the catalog is when no engine is loaded (`CREATEOS_SANDBOX_HOSTD=none`); the engine's list wins otherwise. */
export const FALLBACK_ROOTFS: readonly RootfsInfo[] = [
  { name: "devbox:1", description: "Debian 12 with git, build tools, Node.js, Python, sshd", default: true },
  { name: "debian:12", description: "Small Debian 12: bash, coreutils, iproute2, curl, python3" },
  { name: "nodeops/sandbox:debian", description: "Template base image (Debian 12)" },
];

const ADJECTIVES = [
  "brave",
  "calm",
  "clever",
  "cosmic",
  "crisp",
  "daring",
  "eager",
  "fancy",
  "gentle",
  "happy",
  "jolly",
  "keen",
  "lively",
  "lucky",
  "mellow",
  "nimble",
  "noble",
  "plucky",
  "proud",
  "quick",
  "quiet",
  "rapid",
  "shiny",
  "silent",
  "smart",
  "snowy",
  "solar",
  "spry",
  "sunny",
  "swift",
  "tidy",
  "vivid",
  "witty",
  "zesty",
  "bold",
  "bright",
];
const ANIMALS = [
  "otter",
  "badger",
  "falcon",
  "lynx",
  "panda",
  "heron",
  "koala",
  "marmot",
  "narwhal",
  "ocelot",
  "puffin",
  "quokka",
  "raven",
  "salmon",
  "tapir",
  "urchin",
  "walrus",
  "yak",
  "zebra",
  "beaver",
  "coyote",
  "dingo",
  "ferret",
  "gecko",
  "ibis",
  "jackal",
  "lemur",
  "moose",
  "newt",
  "orca",
  "pelican",
  "robin",
  "seal",
  "toucan",
  "wombat",
];

export function randomName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${ANIMALS[randomInt(ANIMALS.length)]}`;
}
