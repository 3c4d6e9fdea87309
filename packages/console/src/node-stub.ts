/** Stands in for node:net and node:tls in the browser bundle; only the SDK's raw-TCP paths would use it. */
const unavailable = (): never => {
  throw new Error("raw TCP is not available in a browser: the console's terminal uses shell-ws");
};
export default { connect: unavailable, createServer: unavailable, isIP: () => 0 };
