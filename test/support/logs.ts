/**
 * What the functions logged during the current test: every Powertools JSON line, parsed
 * (test/support/quiet-logs.ts collects them and empties the list before each test). A test about a
 * failure asserts on the error lines it expects, so they are checked, not just kept out of sight.
 */
export type LogLine = Record<string, unknown> & { level: string; message: string };

const KEY = Symbol.for('crm-oauth-broker.test-log-lines');

/** The current test's lines, shared by the setup file and the test (one list per worker). */
export function logLines(): LogLine[] {
  const holder = globalThis as typeof globalThis & { [KEY]?: LogLine[] };
  holder[KEY] ??= [];
  return holder[KEY];
}

/** The current test's ERROR lines. */
export const loggedErrors = (): LogLine[] => logLines().filter((line) => line.level === 'ERROR');
