import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ProviderUnavailable } from '../../functions/core/domain/errors.ts';
import {
  OutcomeUnknown,
  ProviderHttp,
  noRetry,
  retryAfterSeconds,
} from '../../functions/adapters/crm/crm-http.ts';

type Reply =
  { status: number; headers?: Record<string, string>; body?: string; delayMs?: number } | 'hang' | 'destroy';
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
    const answer = () => {
      res.writeHead(reply.status, { 'Content-Type': 'application/json', ...reply.headers });
      res.end(reply.body ?? '{}');
    };
    if (reply.delayMs) setTimeout(answer, reply.delayMs);
    else answer();
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
    await expect(
      http.request(url, { method: 'POST' }, policy, { deadline: Date.now() + 5000 }),
    ).rejects.toBeInstanceOf(ProviderUnavailable);
    expect(sleeps).toEqual([]);
    expect(calls).toBe(1);
  });
});

/** A URL nobody listens on: a server started for a free port, then closed. */
async function closedPortUrl(): Promise<string> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((r) => probe.close(() => r()));
  return `http://127.0.0.1:${port}/token`;
}

/** The error a request ends with, or a failure when it succeeded. */
const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => {
      throw new Error('the request succeeded');
    },
    (err: unknown) => err,
  );

describe('refreshes at a CRM that rotates refresh tokens: no retry once it may have been received (security.md row 18)', () => {
  const rotating = { retryAmbiguous: false } as const;

  it('does not retry a timeout: the outcome is unknown', async () => {
    // Prepare: a second attempt would succeed, so only a retry could turn this into a success.
    script = ['hang', { status: 200 }];
    const { http, sleeps } = client();
    // Act
    const err = await failure(http.request(url, { method: 'POST' }, policy, { ...rotating, timeoutMs: 100 }));
    // Assess
    expect(err).toBeInstanceOf(OutcomeUnknown);
    expect(err).toBeInstanceOf(ProviderUnavailable);
    expect(calls).toBe(1);
    expect(sleeps).toEqual([]);
  });

  it('does not retry a connection dropped after the CRM received the request', async () => {
    script = ['destroy', { status: 200 }];
    const { http } = client();
    await expect(http.request(url, { method: 'POST' }, policy, rotating)).rejects.toBeInstanceOf(
      OutcomeUnknown,
    );
    expect(calls).toBe(1);
  });

  it.each([502, 504])(
    'does not retry a gateway’s %i: the CRM behind it may have answered',
    async (status) => {
      script = [{ status }, { status: 200 }];
      const { http } = client();
      await expect(http.request(url, { method: 'POST' }, policy, rotating)).rejects.toBeInstanceOf(
        OutcomeUnknown,
      );
      expect(calls).toBe(1);
    },
  );

  it('retries 500, 503 and 429: the CRM answered, and did not take the request', async () => {
    script = [
      { status: 500 },
      { status: 503 },
      { status: 429 },
      { status: 200, body: '{"access_token":"a"}' },
    ];
    const { http } = client();
    const out = await http.request(url, { method: 'POST' }, { ...policy, maxAttempts: 4 }, rotating);
    expect(out.status).toBe(200);
    expect(out.json).toEqual({ access_token: 'a' });
    expect(calls).toBe(4);
  });

  it('retries a refused connection: the request never left', async () => {
    // Prepare: count the attempts at a port nobody listens on.
    const closed = await closedPortUrl();
    let attempts = 0;
    const http = new ProviderHttp({
      timeoutMs: 2000,
      fetch: (input, init) => {
        attempts++;
        return fetch(input, init);
      },
      sleep: async () => undefined,
    });
    // Act
    const err = await failure(http.request(closed, { method: 'POST' }, policy, rotating));
    // Assess
    expect(err).toBeInstanceOf(ProviderUnavailable);
    expect(err).not.toBeInstanceOf(OutcomeUnknown);
    expect(attempts).toBe(policy.maxAttempts);
  });

  it('does retry a dropped connection when the CRM never rotates (the default)', async () => {
    script = ['destroy', { status: 200, body: '{"x":1}' }];
    const { http } = client();
    const out = await http.request(url, { method: 'POST' }, policy, {});
    expect(out.json).toEqual({ x: 1 });
    expect(calls).toBe(2);
  });
});

describe('startAttemptsBy: when attempts may start, never how long a started one runs', () => {
  it('gives the first attempt its whole timeout even when startAttemptsBy has passed', async () => {
    script = [{ status: 200, body: '{"access_token":"a"}', delayMs: 150 }];
    const { http } = client();
    const out = await http.request(url, { method: 'POST' }, policy, {
      startAttemptsBy: Date.now() - 1,
      timeoutMs: 2000,
    });
    expect(out.json).toEqual({ access_token: 'a' });
    expect(calls).toBe(1);
  });

  it('starts no further attempt once startAttemptsBy has passed', async () => {
    script = [{ status: 503 }, { status: 200 }];
    const { http, sleeps } = client();
    await expect(
      http.request(url, { method: 'POST' }, policy, { startAttemptsBy: Date.now() - 1, timeoutMs: 2000 }),
    ).rejects.toBeInstanceOf(ProviderUnavailable);
    expect(calls).toBe(1);
    expect(sleeps).toEqual([]);
  });

  it('unlike a deadline, which cuts a slow attempt short', async () => {
    script = [{ status: 200, delayMs: 150 }];
    const { http } = client();
    await expect(
      http.request(url, { method: 'POST' }, noRetry, { deadline: Date.now() + 50, timeoutMs: 2000 }),
    ).rejects.toBeInstanceOf(ProviderUnavailable);
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
