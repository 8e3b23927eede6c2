import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ProviderUnavailable } from '../../functions/lib/errors.ts';
import { ProviderHttp, retryAfterSeconds } from '../../functions/lib/provider-http.ts';

type Reply = { status: number; headers?: Record<string, string>; body?: string } | 'hang' | 'destroy';
let script: Reply[] = [];
let calls = 0;
let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    calls++;
    const reply = script.shift() ?? { status: 200, body: '{"ok":true}' };
    if (reply === 'hang') return;
    if (reply === 'destroy') {
      req.socket.destroy();
      return;
    }
    res.writeHead(reply.status, { 'Content-Type': 'application/json', ...reply.headers });
    res.end(reply.body ?? '{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});
beforeEach(() => {
  script = [];
  calls = 0;
});

const policy = { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000 };

function client(timeoutMs = 2000) {
  const sleeps: number[] = [];
  const http = new ProviderHttp({
    timeoutMs,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 0.5,
  });
  return { http, sleeps };
}

describe('calls to a CRM (security.md row 11)', () => {
  it('retries 503, 503 and succeeds on the third call', async () => {
    script = [{ status: 503 }, { status: 503 }, { status: 200, body: '{"access_token":"a"}' }];
    const { http, sleeps } = client();
    const out = await http.request(url, { method: 'POST' }, policy);
    expect(out.status).toBe(200);
    expect(out.json).toEqual({ access_token: 'a' });
    expect(calls).toBe(3);
    // Exponential backoff with jitter: 100 ms then 200 ms, each scaled by 0.75 here.
    expect(sleeps).toEqual([75, 150]);
  });

  it('honours Retry-After on 429', async () => {
    script = [{ status: 429, headers: { 'Retry-After': '2' } }, { status: 200 }];
    const { http, sleeps } = client();
    await http.request(url, { method: 'POST' }, policy);
    expect(sleeps).toEqual([2000]);
    expect(calls).toBe(2);
  });

  it('gives up with ProviderUnavailable after persistent 5xx', async () => {
    script = [{ status: 500 }, { status: 502 }, { status: 503 }, { status: 200 }];
    const { http } = client();
    await expect(http.request(url, { method: 'POST' }, policy)).rejects.toBeInstanceOf(ProviderUnavailable);
    expect(calls).toBe(3);
  });

  it('cuts off a CRM that hangs', async () => {
    script = ['hang', 'hang'];
    const { http } = client(200);
    await expect(http.request(url, { method: 'POST' }, { ...policy, maxAttempts: 2 })).rejects.toBeInstanceOf(
      ProviderUnavailable,
    );
    expect(calls).toBe(2);
  });

  it('treats a dropped connection as transient', async () => {
    script = ['destroy', { status: 200, body: '{"x":1}' }];
    const { http } = client();
    expect((await http.request(url, { method: 'POST' }, policy)).json).toEqual({ x: 1 });
  });

  it('never retries a 4xx: the answer is returned as it is', async () => {
    script = [{ status: 400, body: '{"error":"invalid_grant"}' }];
    const { http } = client();
    const out = await http.request(url, { method: 'POST' }, policy);
    expect(out.status).toBe(400);
    expect(calls).toBe(1);
  });

  it('refuses a huge body without reading it all', async () => {
    script = [{ status: 200, body: `{"a":"${'x'.repeat(400_000)}"}` }];
    const http = new ProviderHttp({ timeoutMs: 2000, maxBodyBytes: 1024 });
    await expect(http.request(url, { method: 'POST' })).rejects.toBeInstanceOf(ProviderUnavailable);
  });

  it('does not wait past the deadline', async () => {
    script = [{ status: 503, headers: { 'Retry-After': '60' } }, { status: 200 }];
    const { http, sleeps } = client();
    await expect(http.request(url, { method: 'POST' }, policy, Date.now() + 5000)).rejects.toBeInstanceOf(
      ProviderUnavailable,
    );
    expect(sleeps).toEqual([]);
    expect(calls).toBe(1);
  });
});

describe('Retry-After parsing', () => {
  it('reads seconds and HTTP dates, ignores junk', () => {
    const now = Date.parse('2026-11-23T10:00:00Z');
    expect(retryAfterSeconds(new Headers({ 'retry-after': '7' }), now)).toBe(7);
    expect(retryAfterSeconds(new Headers({ 'retry-after': 'Mon, 23 Nov 2026 10:00:30 GMT' }), now)).toBe(30);
    expect(retryAfterSeconds(new Headers({ 'retry-after': 'soon' }), now)).toBeUndefined();
    expect(retryAfterSeconds(new Headers(), now)).toBeUndefined();
  });
});
