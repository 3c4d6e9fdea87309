/** Resolves on the first Ctrl-C / SIGTERM / SIGHUP, for commands that run until stopped. */
export function untilInterrupted(): { done: Promise<NodeJS.Signals>; dispose: () => void } {
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  let handler: (sig: NodeJS.Signals) => void = () => {};
  const done = new Promise<NodeJS.Signals>((resolve) => {
    handler = (sig) => resolve(sig);
  });
  for (const s of signals) process.on(s, handler);
  return { done, dispose: () => signals.forEach((s) => process.off(s, handler)) };
}
