/**
 * A newcomer's first hour with the local server: the deployed function names
 * work locally too, a wrong one says which exist, and a second `npm start` on a
 * busy port says what to do instead of dying with a stack trace.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvokeCommand, ResourceNotFoundException } from '@aws-sdk/client-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;

/**
 * `npm start` as a child process, in a folder of its own (its `.data/` must not touch the repo's, which
 * a developer's own `npm start` may hold).
 */
const MAIN = resolve('local/main.ts');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const startArgs = ['--import', TSX, MAIN];
const startCwd = () => mkdtempSync(join(tmpdir(), 'npm-start-'));

beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => broker?.close());

const invoke = async (FunctionName: string) => {
  const out = await broker.lambda.send(
    new InvokeCommand({
      FunctionName,
      Payload: Buffer.from(JSON.stringify({ connectionId: `conn_${'0'.repeat(32)}` })),
    }),
  );
  return JSON.parse(Buffer.from(out.Payload ?? []).toString('utf8')) as { errorType?: string };
};

describe('function names on the local Invoke API', () => {
  it.each([
    'token-fetch',
    'crm-oauth-broker-token-fetch',
    'arn:aws:lambda:us-east-1:000000000000:function:crm-oauth-broker-token-fetch',
    'arn:aws:lambda:us-east-1:000000000000:function:token-fetch:$LATEST',
  ])('%s reaches token-fetch', async (name) => {
    expect(await invoke(name)).toMatchObject({ errorType: 'ConnectionNotFound' });
  });

  it('an unknown name is ResourceNotFoundException naming the local functions', async () => {
    const err = await invoke('crm-oauth-broker-tokenfetch').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceNotFoundException);
    expect((err as Error).message).toContain('connect-session, token-fetch, connections, refresh');
  });
});

describe('npm start on a busy port', () => {
  it('exits 1 with a hint to set PORT, no stack trace', async () => {
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        startArgs,
        { cwd: startCwd(), env: { ...process.env, PORT: String(broker.server.port) }, timeout: 30_000 },
        (error, _stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
      );
      child.stdin?.end();
    });
    expect(code).toBe(1);
    expect(stderr).toContain(`port ${broker.server.port} is in use`);
    expect(stderr).toContain(`PORT=${broker.server.port + 1} npm start`);
    expect(stderr).not.toMatch(/\bat .*\.[cm]?[jt]s:\d+/);
  });
});

describe('npm start with short sandbox token lifetimes', () => {
  it('runs the schedule four times per lifetime and says so, so refreshes can be watched', async () => {
    // A free port: one a server just listened on and closed.
    const port = await new Promise<number>((done) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as AddressInfo;
        probe.close(() => done(free));
      });
    });
    const out = await new Promise<string>((resolve) => {
      let text = '';
      const child = execFile(process.execPath, startArgs, {
        cwd: startCwd(),
        env: {
          ...process.env,
          PORT: String(port),
          SANDBOX_TOKEN_LIFETIME_SECONDS: '120',
          REFRESH_INTERVAL_SECONDS: '',
        },
        timeout: 30_000,
      });
      child.stdout?.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        if (text.includes('scheduled refresh every')) child.kill('SIGTERM');
      });
      child.on('exit', () => resolve(text));
    });
    expect(out).toContain('scheduled refresh every 30 s (a quarter of SANDBOX_TOKEN_LIFETIME_SECONDS=120)');
    expect(out).toContain('Capsule CRM 2 min, Close 2 min');
  });
});
