#!/usr/bin/env node
// `npm run bench -- <name> [args…]`: runs bench/<name>/run.js (or bench/<dir>/<file>.js as `<dir>/<file>`)
// with the arguments after it, against what is built in packages/*/dist. Without a name, lists them.
// The benches that boot VMs say at their top how to run them (most under the machine-wide VM lock).
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [name, ...args] = process.argv.slice(2);

if (!name) {
  console.log("usage: npm run bench -- <name> [args…]\n");
  for (const d of readdirSync(here, { withFileTypes: true })) {
    if (!d.isDirectory()) continue;
    for (const f of readdirSync(join(here, d.name)).sort((a, b) => +(b === "run.js") - +(a === "run.js"))) {
      const head = f.endsWith(".js")
        ? readFileSync(join(here, d.name, f), "utf8")
            .split("\n")
            .slice(0, 30)
        : [];
      // A bench says near its top how it is run (the other files are its helpers); its first comment line
      // says what it measures.
      if (!head.some((l) => /Usage|node bench\//.test(l))) continue;
      const label = f === "run.js" ? d.name : `${d.name}/${f.slice(0, -3)}`;
      console.log(`  ${label.padEnd(15)} ${(head.find((l) => l.startsWith("// ")) ?? "").slice(3)}`);
    }
  }
  process.exit(0);
}

const file = join(here, name.includes("/") ? `${name}.js` : join(name, "run.js"));
if (!/^[a-z0-9-]+(\/[a-z0-9-]+)?$/.test(name) || !existsSync(file)) {
  console.error(`no bench ${JSON.stringify(name)}: run \`npm run bench\` for the list`);
  process.exit(2);
}
const r = spawnSync(process.execPath, [file, ...args], { stdio: "inherit" });
process.exit(r.status ?? 1);
