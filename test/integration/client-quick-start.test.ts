/**
 * examples/client-quick-start.mjs, run with node as a user would against `npm start` (here a test
 * broker on its own port, given as BROKER_URL like the other quick starts): it prints the identity
 * of whoever connected each CRM.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

const run = promisify(execFile);
const EXAMPLE = fileURLToPath(new URL('../../examples/client-quick-start.mjs', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

let broker: TestBroker;
beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => broker?.close());

async function quickStart(...args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env, BROKER_URL: broker.server.url };
  delete env.OWNER_ID;
  try {
    const { stdout, stderr } = await run(process.execPath, [EXAMPLE, ...args], { cwd: ROOT, env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('examples/client-quick-start.mjs', () => {
  it.each([
    ['close', '/me/', '"email": "sam@close-sandbox.example"'],
    ['copper', '/account', '"name": "Sandbox Copper Co"'],
    ['capsule', '/users/current', '"name": "Sam Sandbox"'],
  ])(
    '%s: calls %s through the client library and prints what the CRM said',
    async (provider, path, shown) => {
      // The demo page's owner, the example's default.
      const { connectionId } = await connect(broker, provider, { ownerId: 'demo-owner' });
      const out = await quickStart(connectionId!);

      expect(out.stderr).toBe('');
      expect(out.code).toBe(0);
      expect(out.stdout).toContain(`${provider} connection ${connectionId}`);
      expect(out.stdout).toContain(`${path} -> 200`);
      expect(out.stdout).toContain(shown);
      const token = await broker.invoke('token-fetch', { connectionId, ownerId: 'demo-owner' });
      expect(token.ok).toBe(true);
      // Never the token itself.
      expect(out.stdout).not.toContain((token as { value: { accessToken: string } }).value.accessToken);
    },
  );

  it('says so, with exit code 1, for a connection the owner does not have', async () => {
    const { connectionId } = await connect(broker, 'close', { ownerId: 'someone-else' });
    const out = await quickStart(connectionId!);
    expect(out.code).toBe(1);
    expect(out.stderr).toContain(`No connection ${connectionId} for owner demo-owner`);
  });

  it('prints its usage, with exit code 2, without a connection id', async () => {
    const out = await quickStart();
    expect(out.code).toBe(2);
    expect(out.stderr).toContain('usage: node examples/client-quick-start.mjs <connectionId>');
  });
});
