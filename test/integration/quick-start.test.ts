/**
 * The quick starts in examples/ run as pasted: plain `node examples/<crm>.mjs <connectionId>` against a
 * local broker with sandbox CRMs fetches a token through @aws-sdk/client-lambda and calls that CRM's
 * identity endpoint (Close `/me/`, Copper `/account`, Capsule `/users/current`) with it.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crms } from '../../local/sandbox/crms.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;

beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => broker?.close());

/** Runs an example as a user would, in its own Node process; resolves with its exit code and output. */
function runExample(script: string, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(
      process.execPath,
      [resolve('examples', script), ...args],
      { env: { ...process.env, BROKER_URL: broker.server.url, ...env }, timeout: 30_000 },
      (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const CASES = [
  { provider: 'close', path: '/me/' },
  { provider: 'copper', path: '/account' },
  { provider: 'capsule', path: '/users/current' },
] as const;

describe.each(CASES)('examples/$provider.mjs', ({ provider, path }) => {
  let connectionId: string;
  beforeAll(async () => {
    const done = await connect(broker, provider, { ownerId: 'demo-owner' });
    connectionId = done.connectionId as string;
    expect(connectionId).toMatch(/^conn_[0-9a-f]{32}$/);
  });

  it(`fetches a token and calls ${path}, printing what it got`, async () => {
    const calls = () => broker.server.sandbox.calls()[provider] ?? {};
    const before = Object.values(calls()).reduce((a, b) => a + b, 0);
    const { code, stdout, stderr } = await runExample(`${provider}.mjs`, [connectionId]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.split('\n');
    expect(lines[0]).toMatch(
      new RegExp(`^token for ${provider}, expires (never|\\d{4}-\\d\\d-\\d\\dT[^,]+), API at http://`),
    );
    expect(lines[1]).toBe(`GET ${path} -> 200`);
    // The identity call reached the sandbox CRM and its JSON answer was printed.
    const printed = JSON.parse(lines.slice(2).join('\n')) as Record<string, unknown>;
    expect(Object.keys(printed).length).toBeGreaterThan(0);
    expect(Object.values(calls()).reduce((a, b) => a + b, 0)).toBeGreaterThan(before);
    // Never the token itself.
    expect(stdout).not.toMatch(/Bearer|access_token|accessToken/);
  });

  it('names the script for the connection it was given when the CRM differs', async () => {
    const other = CASES.find((c) => c.provider !== provider)?.provider as string;
    const { code, stderr } = await runExample(`${other}.mjs`, [connectionId]);
    expect(code).toBe(1);
    expect(stderr).toContain(`is a ${provider} connection; use examples/${provider}.mjs`);
  });
});

describe('examples, failing', () => {
  it('a wrong connection id prints the errorType and exits 1', async () => {
    const { code, stdout, stderr } = await runExample('close.mjs', [`conn_${'0'.repeat(32)}`]);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^token-fetch failed: ConnectionNotFound: /);
  });

  it('no connection id prints the usage and exits 2', async () => {
    const { code, stderr } = await runExample('copper.mjs', []);
    expect(code).toBe(2);
    expect(stderr).toContain('usage: node copper.mjs <connectionId>');
  });

  it('refresh-now.mjs runs one scheduled pass and prints its summary', async () => {
    const { code, stdout } = await runExample('refresh-now.mjs', []);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ due: expect.any(Number), refreshed: expect.any(Number) });
  });
});

it('the sandboxes serve the identity paths the examples call', () => {
  for (const { provider, path } of CASES) expect(Object.keys(crms[provider].api)).toContain(path);
});
