// Prints vitest's JSON results as the one plain line CI counts: `N passed, N failed, N skipped`.
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? 'test-results/vitest.json';
let results;
try {
  results = JSON.parse(readFileSync(file, 'utf8'));
} catch {
  console.error(`no test results at ${file}`);
  process.exit(1);
}
const passed = results.numPassedTests ?? 0;
// A suite that fails to load has no failed test of its own: count it as one failure.
let failed = results.numFailedTests ?? 0;
if (failed === 0) failed = results.numFailedTestSuites ?? 0;
const skipped = (results.numPendingTests ?? 0) + (results.numTodoTests ?? 0);
if (passed + failed === 0) {
  console.error('no test ran');
  console.log('0 passed, 1 failed');
  process.exit(1);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
