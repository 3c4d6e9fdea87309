/**
 * The serial console (ttyS0, the kernel's `console=`) written to console.log: the kernel's and the
 * agent's messages when nothing else works, the first place to look when a boot fails.
 */
import type { MachinePaths } from "../driver.js";

export function consoleArgs(p: MachinePaths): string[] {
  // append: a restored VM keeps the console history of the boot it came from.
  return ["-chardev", `file,id=con,path=${p.console},append=on`, "-serial", "chardev:con"];
}
