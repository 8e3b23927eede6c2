/**
 * The demo page's live state (`GET /demo/state`, polled by `/`): what it shows of a connection's
 * lifecycle, and that, like the Invoke API, it answers loopback requests only and no page of another
 * site (it lists every owner's connections, though never a token).
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { displayStatus, relativeTime } from '../../local/home.ts';
import type { ConnectionRecord } from '../../functions/core/domain/records.ts';
import { connect } from '../support/flows.ts';
import { makeDue } from '../support/items.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;
beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => broker?.close());

interface State {
  strip: string;
  connections: string;
  events: string;
}

/** GET /demo/state with exactly these headers (Host included). */
function getState(headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((done, fail) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: broker.server.port,
        path: '/demo/state',
        headers: { host: `localhost:${broker.server.port}`, ...headers },
      },
      (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
        res.on('end', () => done({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', fail);
    req.end();
  });
}

const state = async () => {
  const got = await getState();
  expect(got.status).toBe(200);
  return JSON.parse(got.body) as State;
};

describe('GET /demo/state', () => {
  it('shows a new connection: its id, active, and the connection.created event', async () => {
    const { connectionId } = await connect(broker, 'close', { ownerId: 'demo-owner' });
    const s = await state();
    expect(s.connections).toContain(`data-connection-id="${connectionId}"`);
    expect(s.connections).toMatch(new RegExp(`${connectionId}" data-provider="close" data-status="active"`));
    expect(s.events).toMatch(new RegExp(`connection.created.*${connectionId}`));
    expect(s.strip).toContain('connections');
    expect(JSON.stringify(s)).not.toMatch(/accessToken|refresh_token|Bearer/);
  });

  it('a successful refresh is an event of its own, connection.refreshed', async () => {
    const { connectionId } = await connect(broker, 'capsule', { ownerId: 'demo-owner' });
    expect(await broker.invoke('refresh', { connectionId })).toMatchObject({ ok: true });
    expect((await state()).events).toMatch(new RegExp(`data-event="connection.refreshed">.*${connectionId}`));
  });

  it('an expired token shows as expired, a revoked grant as needs_reauth with a Reconnect button', async () => {
    const connectionId = (await connect(broker, 'close', { ownerId: 'demo-owner' })).connectionId as string;
    await makeDue(broker, connectionId, { expiresInMs: -1000 });
    expect((await state()).connections).toContain(
      `${connectionId}" data-provider="close" data-status="expired"`,
    );

    broker.server.sandbox.revokeAll('close');
    expect(await broker.invoke('refresh-scheduled', {})).toMatchObject({ ok: true });
    const s = await state();
    const row =
      s.connections.split('<tr').find((r) => r.includes(`data-connection-id="${connectionId}"`)) ?? '';
    expect(row).toContain('data-status="needs_reauth"');
    expect(row).toContain('invalid_grant');
    expect(row).toContain('>Reconnect</button>');
    expect(s.events).toMatch(new RegExp(`connection.needs_reauth.*${connectionId}.*invalid_grant`));
  });

  it.each([
    ['another Host (DNS rebinding)', { host: 'evil.test' }],
    ['an Origin of another site', { origin: 'http://evil.test' }],
    ['Origin null', { origin: 'null' }],
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
  ])('refuses %s with 403 and no data', async (_what, headers) => {
    const got = await getState(headers);
    expect(got.status).toBe(403);
    expect(got.body).not.toContain('conn_');
  });
});

describe('how the page says it', () => {
  const now = Date.parse('2026-12-02T10:00:00Z');
  it.each([
    [now + 3 * 60_000, 'in 3 min'],
    [now - 2 * 60_000, '2 min ago'],
    [now + 2_000, 'just now'],
    [now - 45_000, '45 s ago'],
    [now + 3 * 3600_000, 'in 3 h'],
    [now + 7 * 86_400_000, 'in 7 days'],
  ])('%s is "%s"', (at, said) => {
    expect(relativeTime(at, now)).toBe(said);
  });

  const record = (fields: Partial<ConnectionRecord>): ConnectionRecord => ({
    connectionId: 'conn_1',
    ownerId: 'o',
    provider: 'close',
    account: { id: 'a', name: null, userEmail: null },
    status: 'active',
    tokens: '',
    expiresAt: now + 3600_000,
    issuedLifetimeSeconds: 3600,
    lastRefreshedAt: null,
    lastError: null,
    createdAt: now,
    updatedAt: now,
    version: 1,
    refreshFailures: 0,
    dueAt: Math.floor(now / 1000) + 2700,
    ...fields,
  });

  it.each([
    ['active', {}],
    ['refresh due', { dueAt: Math.floor(now / 1000) - 1 }],
    ['expired', { expiresAt: now - 1 }],
    ['refreshing', { expiresAt: now - 1, leaseOwner: 'x', leaseUntil: now + 10_000 }],
    ['active', { leaseOwner: 'x', leaseUntil: now - 1 }],
    ['active', { expiresAt: null, dueAt: undefined }],
    ['needs_reauth', { status: 'needs_reauth', expiresAt: now - 1 }],
  ] as const)('shows %s', (label, fields) => {
    expect(displayStatus(record(fields as Partial<ConnectionRecord>), now).label).toBe(label);
  });
});
