import * as readline from "node:readline";
import { CliError } from "../framework/errors.js";
import type { Style } from "./style.js";

interface Key {
  name?: string;
  ctrl?: boolean;
  meta?: boolean;
  shift?: boolean;
  sequence?: string;
}

export interface Choice<T> {
  label: string;
  value: T;
  hint?: string;
}

/**
 * Small interactive widgets on raw-mode stdin (no dependencies). Every widget restores cooked mode
 * before returning, also when the user presses Ctrl-C (which cancels the command with exit 130).
 */
export class Prompter {
  constructor(
    private readonly input: NodeJS.ReadStream,
    private readonly output: NodeJS.WriteStream,
    private readonly style: Style,
  ) {}

  /** Feeds keypresses to `onKey` until it returns true. */
  private keys(onKey: (str: string | undefined, key: Key) => boolean): Promise<void> {
    const { input } = this;
    readline.emitKeypressEvents(input);
    const wasRaw = input.isRaw;
    if (input.isTTY) input.setRawMode(true);
    input.resume();
    return new Promise<void>((resolve, reject) => {
      const finish = (err?: Error) => {
        input.off("keypress", handler);
        if (input.isTTY) input.setRawMode(wasRaw);
        input.pause();
        if (err) reject(err);
        else resolve();
      };
      const handler = (str: string | undefined, key: Key | undefined) => {
        const k = key ?? { sequence: str };
        if (k.ctrl && (k.name === "c" || k.name === "d")) {
          this.output.write("\n");
          finish(new CliError("cancelled", "cancelled", 130));
          return;
        }
        try {
          if (onKey(str, k)) finish();
        } catch (err) {
          finish(err as Error);
        }
      };
      input.on("keypress", handler);
    });
  }

  private question(q: string): string {
    return `${this.style.cyan("?")} ${this.style.bold(q)}`;
  }

  async text(
    q: string,
    opts: { default?: string; mask?: boolean; validate?: (v: string) => string | undefined } = {},
  ): Promise<string> {
    let value = "";
    let error = "";
    const render = () => {
      const shown = opts.mask ? "*".repeat(value.length) : value;
      const def = opts.default && value === "" ? this.style.dim(` (${opts.default})`) : "";
      const err = error ? ` ${this.style.red(error)}` : "";
      this.output.write(`\r\x1b[2K${this.question(q)}${def} ${shown}${err}`);
    };
    render();
    await this.keys((str, key) => {
      if (key.name === "return" || key.name === "enter") {
        const v = value === "" ? (opts.default ?? "") : value;
        const problem = opts.validate?.(v);
        if (problem) {
          error = problem;
          render();
          return false;
        }
        value = v;
        return true;
      }
      error = "";
      if (key.name === "backspace") value = value.slice(0, -1);
      else if (key.ctrl && key.name === "u") value = "";
      else if (str && !key.ctrl && !key.meta && str >= " ") value += str;
      render();
      return false;
    });
    const shown = opts.mask ? "*".repeat(Math.min(value.length, 8)) : value;
    this.output.write(`\r\x1b[2K${this.question(q)} ${this.style.cyan(shown)}\n`);
    return value;
  }

  async confirm(q: string, def = false): Promise<boolean> {
    let answer = def;
    this.output.write(`${this.question(q)} ${this.style.dim(def ? "(Y/n)" : "(y/N)")} `);
    await this.keys((str, key) => {
      if (key.name === "return" || key.name === "enter") return true;
      if (str === "y" || str === "Y") {
        answer = true;
        return true;
      }
      if (str === "n" || str === "N") {
        answer = false;
        return true;
      }
      return false;
    });
    this.output.write(`${this.style.cyan(answer ? "yes" : "no")}\n`);
    return answer;
  }

  /** Arrow keys (or j/k) move, Enter picks. */
  async select<T>(q: string, choices: Choice<T>[], initial = 0): Promise<T> {
    if (choices.length === 0) throw new CliError(`nothing to choose from for "${q}"`);
    let cursor = Math.min(Math.max(0, initial), choices.length - 1);
    const lines = this.renderList(
      q,
      choices,
      () => cursor,
      () => false,
      "↑/↓ to move, enter to select",
    );
    await this.keys((str, key) => {
      if (key.name === "up" || str === "k") cursor = (cursor - 1 + choices.length) % choices.length;
      else if (key.name === "down" || str === "j") cursor = (cursor + 1) % choices.length;
      else if (key.name === "return" || key.name === "enter") return true;
      else return false;
      lines.redraw();
      return false;
    });
    const picked = choices[cursor] as Choice<T>;
    lines.finish(picked.label);
    return picked.value;
  }

  /** Space toggles, Enter confirms (an empty selection is allowed). */
  async multiSelect<T>(q: string, choices: Choice<T>[]): Promise<T[]> {
    if (choices.length === 0) return [];
    let cursor = 0;
    const chosen = new Set<number>();
    const lines = this.renderList(
      q,
      choices,
      () => cursor,
      (i) => chosen.has(i),
      "space to toggle, enter to confirm",
      true,
    );
    await this.keys((str, key) => {
      if (key.name === "up" || str === "k") cursor = (cursor - 1 + choices.length) % choices.length;
      else if (key.name === "down" || str === "j") cursor = (cursor + 1) % choices.length;
      else if (key.name === "space" || str === " ") {
        if (chosen.has(cursor)) chosen.delete(cursor);
        else chosen.add(cursor);
      } else if (key.name === "return" || key.name === "enter") return true;
      else return false;
      lines.redraw();
      return false;
    });
    const picked = [...chosen].sort((a, b) => a - b).map((i) => choices[i] as Choice<T>);
    lines.finish(picked.length ? picked.map((c) => c.label).join(", ") : "none");
    return picked.map((c) => c.value);
  }

  private renderList<T>(
    q: string,
    choices: Choice<T>[],
    cursor: () => number,
    checked: (i: number) => boolean,
    help: string,
    checkboxes = false,
  ) {
    const { output, style } = this;
    // Long catalogs scroll in a window so the widget never exceeds the terminal.
    const windowSize = Math.max(3, Math.min(choices.length, (output.rows ?? 24) - 3));
    const labelWidth = Math.max(...choices.map((ch) => ch.label.length));
    let drawn = 0;
    const draw = () => {
      if (drawn > 0) output.write(`\x1b[${drawn}A`);
      const c = cursor();
      const top = Math.min(Math.max(0, c - windowSize + 1), choices.length - windowSize);
      const rows = [`${this.question(q)} ${style.dim(`(${help})`)}`];
      for (let i = Math.max(0, top); i < Math.max(0, top) + windowSize && i < choices.length; i++) {
        const ch = choices[i] as Choice<T>;
        const pointer = i === c ? style.cyan("❯") : " ";
        const box = checkboxes ? (checked(i) ? style.green("◉ ") : "◯ ") : "";
        const padded = ch.hint ? ch.label.padEnd(labelWidth) : ch.label;
        const label = i === c ? style.cyan(padded) : padded;
        // A row that wrapped would throw off the cursor-up redraw: hints are clipped to the terminal.
        const room = (output.columns ?? 80) - 1 - (2 + box.length + padded.length + 2);
        const hint = ch.hint ? clip(ch.hint, room) : "";
        rows.push(`${pointer} ${box}${label}${hint ? style.dim(`  ${hint}`) : ""}`);
      }
      for (const r of rows) output.write(`\r\x1b[2K${r}\n`);
      drawn = rows.length;
    };
    draw();
    return {
      redraw: draw,
      finish: (answer: string) => {
        output.write(`\x1b[${drawn}A`);
        for (let i = 0; i < drawn; i++) output.write("\r\x1b[2K\n");
        output.write(`\x1b[${drawn}A`);
        output.write(`\r\x1b[2K${this.question(q)} ${style.cyan(answer)}\n`);
      },
    };
  }
}

/** `s` cut to `room` characters, ending in "…" when cut ("" when there is no room). */
export function clip(s: string, room: number): string {
  if (room <= 1) return "";
  return s.length <= room ? s : `${s.slice(0, room - 1)}…`;
}
