/**
 * Self-signals from code running inside a sandbox: the guest agent listens on loopback only, so
 * no credentials are involved and a sandbox can only ever signal itself.
 */
const SELF_SIGNAL_BASE = "http://127.0.0.1:1029";
const MAX_REASON = 128;

async function selfSignal(action: "pause" | "delete", reason?: string): Promise<void> {
  const url = new URL(`/self/${action}`, SELF_SIGNAL_BASE);
  if (reason) url.searchParams.set("reason", reason.slice(0, MAX_REASON));
  const res = await fetch(url, { method: "POST" });
  await res.body?.cancel().catch(() => undefined);
  if (res.status !== 202) throw new Error(`self-${action} failed: HTTP ${res.status}`);
}

export function selfPause(reason?: string): Promise<void> {
  return selfSignal("pause", reason);
}

export function selfDelete(reason?: string): Promise<void> {
  return selfSignal("delete", reason);
}
