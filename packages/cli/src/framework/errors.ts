/** Exit codes: documented in docs/cli.md; scripts depend on the split between 1 and 2. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A failure the user should see as one line, never with a stack trace. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(message: string, code = "error", exitCode = EXIT_FAILURE) {
    super(message);
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** Bad flags or arguments: exit 2 and a pointer to `--help`. */
export class UsageError extends CliError {
  /** The command path whose help is worth reading, e.g. "createos sandbox create". */
  helpFor: string | undefined;
  constructor(message: string, helpFor?: string) {
    super(message, "usage_error", EXIT_USAGE);
    this.helpFor = helpFor;
  }
}

/** Ends the process with a given exit code without printing anything (exec, ssh). */
export class ExitCode extends Error {
  readonly exitCode: number;
  constructor(code: number) {
    super(`exit ${code}`);
    this.exitCode = code;
  }
}

export function notFound(kind: string, ref: string): CliError {
  return new CliError(`not found: ${kind} "${ref}"`, "not_found");
}
