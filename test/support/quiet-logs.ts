/**
 * Test setup for every project. The functions log through Powertools, which writes its JSON lines
 * straight to process.stdout/stderr, past vitest's console capture: a green run printed every expected
 * failure ("unexpected failure" … TimeoutError from the fault tests) as if something were wrong. Here
 * those lines go through `console` instead, so vitest attributes each line to the test that caused
 * it, and `silent: 'passed-only'` (vitest.config.ts) shows them only for a test that fails, where
 * they are what one needs to see. Tests that read the log themselves replace process.stdout.write
 * for their duration and see every line first. Each line is also kept, parsed, for the test to assert
 * on (logs.ts: `loggedErrors()`).
 */
import { beforeEach } from 'vitest';
import { type LogLine, logLines } from './logs.ts';

beforeEach(() => {
  logLines().length = 0;
});

function keep(chunk: string) {
  for (const line of chunk.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      logLines().push(JSON.parse(line) as LogLine);
    } catch {
      // Not one whole JSON line: it is still printed, only not kept.
    }
  }
}
const isLogLine = (chunk: unknown): chunk is string =>
  typeof chunk === 'string' && chunk.startsWith('{"level":');

let forwarding = false;
for (const [stream, method] of [
  [process.stdout, 'log'],
  [process.stderr, 'error'],
] as const) {
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    // Re-entrant writes (a console that itself writes to the stream) go out as they are.
    if (forwarding || !isLogLine(chunk)) return write(chunk, ...rest);
    keep(chunk);
    forwarding = true;
    try {
      console[method](chunk.trimEnd());
    } finally {
      forwarding = false;
    }
    const done = rest.find((arg): arg is () => void => typeof arg === 'function');
    done?.();
    return true;
  }) as typeof stream.write;
}
