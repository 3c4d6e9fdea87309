/** The byte splice the API's tunnel route and the SSH gateway's `direct-tcpip` channels share. */
import type { Duplex } from "node:stream";

/**
 * Pipes `client` and `guest` together. pipe() forwards a FIN as end() on the other side and keeps the
 * reverse direction flowing (half-close); the client closing tears the guest side down, the guest closing
 * ends the client's side once its bytes are out. `done` runs once, when either side closed or failed.
 */
export function splice(client: Duplex, guest: Duplex, done: () => void): void {
  let over = false;
  const finish = () => {
    if (over) return;
    over = true;
    done();
  };
  const kill = () => {
    guest.destroy();
    client.destroy();
    finish();
  };
  client.pipe(guest);
  guest.pipe(client);
  client.on("error", kill);
  guest.on("error", kill);
  client.on("close", () => {
    guest.destroy();
    finish();
  });
  guest.on("close", () => {
    if (!client.writableEnded) client.end();
    finish();
  });
}
