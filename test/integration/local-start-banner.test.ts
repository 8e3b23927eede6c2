/**
 * `npm start` as a newcomer sees it: a short banner that says where everything is, one short line
 * per request (never a query string), lifecycle events that survive a restart, and a one-line
 * explanation, not dynalite's "Database is closed", when another `npm start` holds `.data/`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { KEPT_EVENTS, FileEventLog } from '../../local/event-file.ts';
import { humanLogLine } from '../../local/log-lines.ts';

const MAIN = resolve('local/main.ts');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

const freePort = () =>
  new Promise<number>((done) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => done(port));
    });
  });

interface Started {
  child: ChildProcess;
  port: number;
  /** Everything printed so far, stdout and stderr. */
  out: () => string;
  exited: Promise<number | null>;
}

const children: ChildProcess[] = [];
afterEach(async () => {
  await Promise.all(
    children.splice(0).map(
      (child) =>
        new Promise<void>((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done();
          child.once('exit', () => done());
          child.kill('SIGTERM');
        }),
    ),
  );
});

/** `npm start` in `cwd`; resolves once the banner is out (or the process ended). */
async function start(cwd: string, env: Record<string, string> = {}): Promise<Started> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', TSX, MAIN], {
    cwd,
    env: { ...process.env, PORT: String(port), REFRESH_INTERVAL_SECONDS: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let text = '';
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const collect = (chunk: Buffer) => {
    text += chunk.toString('utf8');
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  await Promise.race([
    exited,
    new Promise<void>((done) => {
      const check = () => (text.includes('  data ') ? done() : setTimeout(check, 50));
      check();
    }),
  ]);
  return { child, port, out: () => text, exited };
}

const stop = async (s: Started) => {
  s.child.kill('SIGTERM');
  return s.exited;
};

describe('npm start', () => {
  it('prints where everything is: URL, store, key, events, schedule (and why), sandbox lifetimes, data', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'npm-start-'));
    const s = await start(cwd, { SANDBOX_TOKEN_LIFETIME_SECONDS: '120' });
    const banner = s.out();
    expect(banner).toContain(`crm-oauth-broker on http://localhost:${s.port}`);
    expect(banner).toContain(`demo page     http://localhost:${s.port}/`);
    expect(banner).toContain(`new LambdaClient({ endpoint: 'http://127.0.0.1:${s.port}' })`);
    expect(banner).toContain('store         embedded (dynalite), data in .data/dynamodb');
    expect(banner).toContain('key           local master key .data/master.key');
    expect(banner).toContain('events        .data/events.jsonl (kept across restarts)');
    expect(banner).toContain(
      'schedule      scheduled refresh every 30 s (a quarter of SANDBOX_TOKEN_LIFETIME_SECONDS=120)',
    );
    expect(banner).toContain('Copper never expires, Capsule CRM 2 min, Close 2 min');
    expect(banner).toContain(`data          ${join(cwd, '.data')}`);
    // Short: a newcomer reads all of it.
    expect(banner.trim().split('\n').length).toBeLessThanOrEqual(12);
    expect(await stop(s)).toBe(0);
  });

  it('logs one short line per request, without the query string, and no JSON', async () => {
    const s = await start(mkdtempSync(join(tmpdir(), 'npm-start-')));
    const before = s.out().length;
    // The demo page's polling is not logged (it would be a line every 3 s).
    expect((await fetch(`http://127.0.0.1:${s.port}/demo/state`)).status).toBe(200);
    await fetch(`http://127.0.0.1:${s.port}/connect/close?session=secret-session-value`);
    const invoked = await fetch(`http://127.0.0.1:${s.port}/2015-03-31/functions/token-fetch/invocations`, {
      method: 'POST',
      body: JSON.stringify({ connectionId: `conn_${'0'.repeat(32)}` }),
    });
    expect(invoked.headers.get('x-amz-function-error')).toBe('Unhandled');
    await expect.poll(() => s.out().slice(before)).toContain('/invocations');
    const lines = s.out().slice(before).trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^GET \/connect\/close 400 \d+ ms$/);
    expect(lines[1]).toMatch(
      /^POST \/2015-03-31\/functions\/token-fetch\/invocations 200 ConnectionNotFound \d+ ms$/,
    );
    expect(s.out()).not.toContain('secret-session-value');
    expect(s.out()).not.toContain('{"level"');
    await stop(s);
  });

  it('a second npm start in the same folder says .data/ is in use, in one line, and leaves the first running', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'npm-start-'));
    const first = await start(cwd);
    const second = await start(cwd);
    expect(await second.exited).toBe(1);
    const said = second.out().trim();
    expect(said).toBe(
      `crm-oauth-broker: ${join(cwd, '.data')} is in use by another npm start (pid ${first.child.pid}). Stop that one first, or run this one from another folder.`,
    );
    expect((await fetch(`http://127.0.0.1:${first.port}/`)).status).toBe(200);
    // Once the first has stopped, the folder is free again.
    expect(await stop(first)).toBe(0);
    const third = await start(cwd);
    expect(third.out()).toContain('crm-oauth-broker on');
    await stop(third);
  });

  it('reads the lifecycle events of the last run back from .data/events.jsonl', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'npm-start-'));
    const id = `conn_${'a'.repeat(32)}`;
    const log = new FileEventLog(join(cwd, 'events.jsonl'));
    await log.publish({
      type: 'connection.refreshed',
      detail: { connectionId: id, ownerId: 'demo-owner', provider: 'close', at: new Date().toISOString() },
    });
    mkdirSync(join(cwd, '.data'));
    renameSync(join(cwd, 'events.jsonl'), join(cwd, '.data', 'events.jsonl'));

    const s = await start(cwd);
    const state = (await (await fetch(`http://127.0.0.1:${s.port}/demo/state`)).json()) as { events: string };
    expect(state.events).toContain(id);
    expect(state.events).toContain('connection.refreshed');
    await stop(s);
  });
});

describe('FileEventLog', () => {
  const event = (n: number) => ({
    type: 'connection.refreshed' as const,
    detail: {
      connectionId: `conn_${n}`,
      ownerId: 'o',
      provider: 'close' as const,
      at: new Date(n).toISOString(),
    },
  });

  it('appends each event to its file, and a new log over the same file starts with them', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'events-')), 'events.jsonl');
    const first = new FileEventLog(file);
    await first.publish(event(1));
    await first.publish(event(2));
    expect(new FileEventLog(file).events).toEqual([event(1), event(2)]);
  });

  it('keeps the latest KEPT_EVENTS across restarts and skips a line cut short by a crash', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'events-')), 'events.jsonl');
    const log = new FileEventLog(file);
    for (let n = 1; n <= KEPT_EVENTS * 2 + 5; n += 1) await log.publish(event(n));
    writeFileSync(file, `${readFileSync(file, 'utf8')}{"type":"connection.refre`);
    const again = new FileEventLog(file);
    expect(again.events).toHaveLength(KEPT_EVENTS);
    expect(again.events.at(-1)).toEqual(event(KEPT_EVENTS * 2 + 5));
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(KEPT_EVENTS);
  });
});

describe('local log lines', () => {
  it('turn a Powertools JSON line into level, function, message and the fields that say something', () => {
    const json = JSON.stringify({
      level: 'WARN',
      message: 'dependency failed',
      timestamp: '2026-12-02T07:00:00.000Z',
      service: 'crm-oauth-broker',
      cold_start: true,
      function_arn: 'arn:aws:lambda:us-east-1:000000000000:function:token-fetch',
      function_request_id: 'c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
      function: 'token-fetch',
      errorName: 'TimeoutError',
      connectionId: 'conn_1',
    });
    expect(humanLogLine(`${json}\n`)).toBe(
      'WARN token-fetch: dependency failed errorName=TimeoutError connectionId=conn_1\n',
    );
  });

  it('leave every other line as it is', () => {
    expect(humanLogLine('GET / 200 3 ms\n{not json\n')).toBe('GET / 200 3 ms\n{not json\n');
  });
});
