import { type Spinner, startSpinner } from "../ui/spinner.js";
import { type Style, makeStyle } from "../ui/style.js";
import type { Globals } from "./args.js";

export interface Streams {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

/**
 * Where things go: one JSON document on stdout in JSON mode (explicit, or stdout is not a terminal),
 * human text otherwise; progress, spinners and warnings always on stderr.
 */
export class Output {
  readonly json: boolean;
  /** `--output json` or CREATEOS_OUTPUT=json: exec only switches to JSON then. */
  readonly explicitJson: boolean;
  /** Styles for stdout / stderr. */
  readonly style: Style;
  readonly errStyle: Style;
  readonly stdoutTTY: boolean;
  readonly stderrTTY: boolean;

  constructor(
    readonly streams: Streams,
    globals: Pick<Globals, "output" | "noColor">,
  ) {
    this.stdoutTTY = streams.stdout.isTTY === true;
    this.stderrTTY = streams.stderr.isTTY === true;
    this.explicitJson = globals.output === "json";
    this.json = globals.output === "json" || (globals.output === undefined && !this.stdoutTTY);
    this.style = makeStyle(this.stdoutTTY && !globals.noColor && !this.json);
    this.errStyle = makeStyle(this.stderrTTY && !globals.noColor);
  }

  /** Print a read or mutation result: the JSON document, or the human rendering. */
  result(doc: unknown, human: () => string | undefined): void {
    if (this.json) this.printJson(doc);
    else {
      const text = human();
      if (text !== undefined && text !== "")
        this.streams.stdout.write(text.endsWith("\n") ? text : text + "\n");
    }
  }

  printJson(doc: unknown): void {
    this.streams.stdout.write(JSON.stringify(doc, null, 2) + "\n");
  }

  /** Human progress / info: stderr so stdout stays parseable. */
  info(msg: string): void {
    this.streams.stderr.write(msg + "\n");
  }

  warn(msg: string): void {
    this.streams.stderr.write(`${this.errStyle.yellow("warning:")} ${msg}\n`);
  }

  success(msg: string): string {
    return `${this.style.green("✓")} ${msg}`;
  }

  spinner(text: string): Spinner {
    return startSpinner(this.streams.stderr, text, this.stderrTTY);
  }

  /** A spinner around an async step, leaving a ✓ line on a terminal. */
  async step<T>(text: string, fn: (s: Spinner) => Promise<T>, done?: (v: T) => string): Promise<T> {
    const s = this.spinner(text);
    try {
      const v = await fn(s);
      s.stop(this.stderrTTY && done ? `${this.errStyle.green("✓")} ${done(v)}` : undefined);
      return v;
    } catch (err) {
      s.stop();
      throw err;
    }
  }
}
