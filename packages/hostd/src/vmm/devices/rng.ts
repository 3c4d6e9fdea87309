/**
 * Entropy: a virtio-rng device fed from the host, so the guest's RNG is seeded at boot instead of
 * blocking early `getrandom()` callers on a machine with hardly any entropy sources.
 */
export function rngArgs(): string[] {
  return ["-device", "virtio-rng-device"];
}
