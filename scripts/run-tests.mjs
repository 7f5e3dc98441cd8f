#!/usr/bin/env node
// `npm test`: runs vitest once with the default reporter (for people) and the JSON reporter (for the
// count), then prints the plain closing line CI reads:  N passed, N failed[, N skipped]
// A test file that fails to load counts as a failure; so does a missing or unreadable report, and a
// vitest run that exits non-zero without a failing test (an unhandled error, say).
// Extra arguments go to vitest:  npm test -- test/tensor.test.ts -t forward
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const report = join(root, '.vitest-report.json');
const require = createRequire(import.meta.url);

function finish(passed, failed, skipped, note) {
  if (note) console.log(note);
  console.log(`${passed} passed, ${failed} failed` + (skipped > 0 ? `, ${skipped} skipped` : ''));
  process.exit(failed > 0 ? 1 : 0);
}

let vitestBin;
try {
  vitestBin = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
} catch {
  finish(0, 1, 0, 'run-tests: vitest is not installed (run `npm install` first)');
}

rmSync(report, { force: true });
const args = [
  vitestBin, 'run',
  '--reporter=default', '--reporter=json', `--outputFile.json=${report}`,
  ...process.argv.slice(2),
];
const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));

child.on('error', (err) => finish(0, 1, 0, `run-tests: could not start vitest: ${err.message}`));
child.on('close', (code, signal) => {
  if (!existsSync(report)) {
    finish(0, 1, 0, `run-tests: vitest wrote no report (exit ${code ?? signal}); counting the run as failed`);
  }
  let json;
  try {
    json = JSON.parse(readFileSync(report, 'utf8'));
  } catch (err) {
    finish(0, 1, 0, `run-tests: unreadable report ${report}: ${err.message}`);
  }
  let passed = 0, failed = 0, skipped = 0, brokenFiles = 0;
  for (const file of json.testResults ?? []) {
    let fileFailed = 0;
    for (const t of file.assertionResults ?? []) {
      if (t.status === 'passed') passed++;
      else if (t.status === 'failed') { failed++; fileFailed++; }
      else skipped++; // skipped, pending, todo, disabled
    }
    // A file that failed to import (or whose hooks threw) has status 'failed' and no failed test.
    if (file.status === 'failed' && fileFailed === 0) {
      brokenFiles++;
      failed++;
    }
  }
  let note = brokenFiles > 0 ? `run-tests: ${brokenFiles} test file(s) failed outside any test (import or hook errors), counted as failures` : '';
  if (passed + failed + skipped === 0) {
    failed = 1;
    note = 'run-tests: no tests ran; counted as a failure';
  }
  if (failed === 0 && (code !== 0 || signal)) {
    failed = 1;
    note = `run-tests: vitest exited with ${code ?? signal} although no test failed (unhandled error?); counted as a failure`;
  }
  finish(passed, failed, skipped, note);
});
