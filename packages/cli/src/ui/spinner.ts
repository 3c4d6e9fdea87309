const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export interface Spinner {
  update(text: string): void;
  /** Stops and, when given, leaves a final line (e.g. "✓ Paused sb-…"). */
  stop(final?: string): void;
}

/** Spinners only animate on a terminal; elsewhere they are silent so logs stay clean. */
export function startSpinner(stream: NodeJS.WriteStream, text: string, enabled: boolean): Spinner {
  if (!enabled) {
    return { update() {}, stop() {} };
  }
  let frame = 0;
  let current = text;
  const draw = () => {
    stream.write(`\r\x1b[2K${FRAMES[frame % FRAMES.length]} ${current}`);
    frame++;
  };
  draw();
  const timer = setInterval(draw, 80);
  timer.unref();
  let stopped = false;
  return {
    update(t: string) {
      current = t;
    },
    stop(final?: string) {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      stream.write("\r\x1b[2K");
      if (final) stream.write(final + "\n");
    },
  };
}
