import { CreateosSandboxError, CreateosSandboxTimeoutError } from "./errors.js";

/** Resolves after `ms`, or early when `signal` aborts. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export interface PollOptions<T> {
  poll: () => Promise<T>;
  done: (value: T) => boolean;
  /** A message when `value` is a terminal failure. */
  failed?: ((value: T) => string | undefined) | undefined;
  /** Overall budget in ms. */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

export const POLL_INITIAL_MS = 250;
export const POLL_MAX_MS = 2_000;
/** How long polling stays at the initial interval before ramping. */
export const POLL_RAMP_AFTER_MS = 5_000;

/** Interval for the next poll: 250 ms for the first 5 s, then ×1.25 per poll up to 2 s. */
export function nextPollInterval(current: number, elapsedMs: number): number {
  return elapsedMs > POLL_RAMP_AFTER_MS ? Math.min(current * 1.25, POLL_MAX_MS) : current;
}

/** Polls until `done`, a `failed` message (thrown), the budget (timeout error) or an abort. */
export async function pollUntil<T>(options: PollOptions<T>): Promise<T> {
  const start = Date.now();
  const deadline = start + options.timeoutMs;
  let interval = POLL_INITIAL_MS;
  for (;;) {
    if (options.signal?.aborted) throw new CreateosSandboxError("Wait aborted.");
    const value = await options.poll();
    if (options.done(value)) return value;
    const failure = options.failed?.(value);
    if (failure !== undefined) throw new CreateosSandboxError(failure);
    const now = Date.now();
    if (now >= deadline) {
      throw new CreateosSandboxTimeoutError(
        `Timed out after ${options.timeoutMs}ms waiting for the expected state.`,
      );
    }
    interval = nextPollInterval(interval, now - start);
    await sleep(Math.min(interval, deadline - now), options.signal);
  }
}
