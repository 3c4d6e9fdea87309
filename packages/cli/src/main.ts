import { run } from "./cli.js";

// A reader that went away (`createos … | head`) is not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

const code = await run(process.argv.slice(2), process.env, {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
});
// Exit explicitly: idle keep-alive sockets of the HTTP pool must not hold the process open.
process.exitCode = code;
process.exit(code);
