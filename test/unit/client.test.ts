/**
 * The client library (`@crm-oauth-broker/client`) against a fake Lambda client and a fake CRM
 * `fetch`, for exact control of time, ordering and failures: the token cache and its expiry,
 * single flight, owner isolation, the 401 path, path refusals and the error classes.
 */
import { createHash } from 'node:crypto';
import type { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { describe, expect, it } from 'vitest';
import {
  type BrokerClient,
  type BrokerClientOptions,
  BrokerError,
  BrokerUnavailable,
  ConnectionNotFound,
  InvalidRequest,
  NeedsReauth,
  ProviderUnavailable,
  createBrokerClient,
} from '@crm-oauth-broker/client';

const CONN = 'conn_0123456789abcdef0123456789abcdef';
const T0 = Date.parse('2026-12-01T10:00:00.000Z');
const API = 'https://api.crm.test/api/v1';

/** A function error as Lambda reports it (`FunctionError` plus `{ errorType, errorMessage }`). */
class FunctionFailure extends Error {
  constructor(
    readonly errorType: string,
    message = `${errorType} from the fake`,
  ) {
    super(message);
  }
}

type Answer = (name: string, payload: any) => unknown;

/** A Lambda client whose invocations are answered by `answer`; it records every one. */
class FakeLambda {
  readonly calls: { name: string; payload: any }[] = [];
  constructor(public answer: Answer) {}
  async send(command: InvokeCommand) {
    const name = command.input.FunctionName ?? '';
    const payload = JSON.parse(new TextDecoder().decode(command.input.Payload as Uint8Array));
    this.calls.push({ name, payload });
    const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    try {
      return { StatusCode: 200, Payload: encode(await this.answer(name, payload)) };
    } catch (err) {
      if (!(err instanceof FunctionFailure)) throw err;
      return {
        StatusCode: 200,
        FunctionError: 'Unhandled',
        Payload: encode({ errorType: err.errorType, errorMessage: err.message, trace: [] }),
      };
    }
  }
  destroy() {}
  tokenFetches() {
    return this.calls.filter((c) => c.name.endsWith('token-fetch'));
  }
}

const tokenAnswer = (accessToken: string, expiresAt: number | null) => ({
  connectionId: CONN,
  provider: 'close',
  accessToken,
  tokenType: 'Bearer',
  expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString(),
  apiBaseUrl: API,
  headers: { Authorization: `Bearer ${accessToken}`, Accept: 'application/json' },
});

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

interface Clock {
  now: () => number;
  advance(seconds: number): void;
}
const fakeClock = (): Clock => {
  let t = T0;
  return { now: () => t, advance: (s) => void (t += s * 1000) };
};

/** A token-fetch that issues `tok-1`, `tok-2`, ... each valid for `lifetimeSeconds` from the fake clock. */
function issuingTokens(clock: Clock, lifetimeSeconds: number | null = 3600) {
  let n = 0;
  return (name: string) => {
    if (!name.endsWith('token-fetch')) throw new Error(`unexpected invoke of ${name}`);
    n += 1;
    return tokenAnswer(`tok-${n}`, lifetimeSeconds === null ? null : clock.now() + lifetimeSeconds * 1000);
  };
}

function clientWith(lambda: FakeLambda, options: Omit<BrokerClientOptions, 'lambda'> = {}): BrokerClient {
  return createBrokerClient({ lambda: lambda as unknown as LambdaClient, ...options });
}

/** A CRM `fetch` that answers with `answer(url, authorization)` and records every call. */
function fakeCrm(answer: (url: URL, authorization: string | null) => Response) {
  const calls: { url: URL; init: RequestInit; authorization: string | null }[] = [];
  const fetch = async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(String(input));
    const authorization = new Headers(init.headers).get('authorization');
    calls.push({ url, init, authorization });
    return answer(url, authorization);
  };
  return { calls, fetch: fetch as typeof globalThis.fetch };
}

/** A promise with its resolver outside, to hold an invocation open. */
function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('getToken: the in-memory cache', () => {
  it('invokes <prefix>-token-fetch with the connection, owner and minValiditySeconds, then serves the cache', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock));
    const client = clientWith(lambda, { now: clock.now });

    const first = await client.getToken(CONN, { ownerId: 'user-42' });
    const second = await client.getToken(CONN, { ownerId: 'user-42' });

    expect(first.accessToken).toBe('tok-1');
    expect(second).toBe(first);
    expect(lambda.calls).toEqual([
      {
        name: 'crm-oauth-broker-token-fetch',
        payload: { connectionId: CONN, ownerId: 'user-42', minValiditySeconds: 300 },
      },
    ]);
  });

  it('keeps a token until expiresAt − minValiditySeconds, then fetches again', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock, 3600));
    const client = clientWith(lambda, { now: clock.now });

    await client.getToken(CONN, { ownerId: 'o' });
    clock.advance(3600 - 300 - 1);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-1');
    // A caller asking for more validity than is left does not get the cached token.
    expect((await client.getToken(CONN, { ownerId: 'o', minValiditySeconds: 600 })).accessToken).toBe(
      'tok-2',
    );
    expect(lambda.tokenFetches().at(-1)?.payload.minValiditySeconds).toBe(600);

    clock.advance(3600 - 300 - 1);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-2');
    clock.advance(1);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-3');
    expect(lambda.tokenFetches()).toHaveLength(3);
  });

  it('keeps a token that never expires (expiresAt null) until the CRM rejects it', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock, null));
    const crm = fakeCrm((_url, auth) => new Response('{}', { status: auth === 'Bearer tok-1' ? 401 : 200 }));
    const client = clientWith(lambda, { now: clock.now, fetch: crm.fetch });

    await client.getToken(CONN, { ownerId: 'o' });
    clock.advance(10 * 365 * 86_400);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-1');
    expect(lambda.tokenFetches()).toHaveLength(1);

    const res = await client.fetch(CONN, '/account', { ownerId: 'o' });
    expect(res.status).toBe(200);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-2');
    expect(lambda.tokenFetches()).toHaveLength(2);
  });

  it('keeps a token handed out with less than minValiditySeconds left for half of what it had', async () => {
    const clock = fakeClock();
    // 120-second tokens: the broker never asks more than half the issued lifetime, so it hands them out.
    const lambda = new FakeLambda(issuingTokens(clock, 120));
    const client = clientWith(lambda, { now: clock.now });

    await client.getToken(CONN, { ownerId: 'o' });
    clock.advance(59);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-1');
    clock.advance(1);
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-2');
  });

  it('one owner’s cached token never serves another owner, nor a call without an owner', async () => {
    const lambda = new FakeLambda((_name, payload) =>
      tokenAnswer(`tok-for-${payload.ownerId ?? 'nobody'}`, null),
    );
    const client = clientWith(lambda);

    expect((await client.getToken(CONN, { ownerId: 'tenant-a' })).accessToken).toBe('tok-for-tenant-a');
    expect((await client.getToken(CONN, { ownerId: 'tenant-b' })).accessToken).toBe('tok-for-tenant-b');
    expect((await client.getToken(CONN)).accessToken).toBe('tok-for-nobody');
    // Owner ids built to look like another key's parts still get a key of their own.
    expect((await client.getToken(CONN, { ownerId: 'null' })).accessToken).toBe('tok-for-null');
    expect((await client.getToken(CONN, { ownerId: 'tenant-a' })).accessToken).toBe('tok-for-tenant-a');
    expect(lambda.tokenFetches().map((c) => c.payload.ownerId)).toEqual([
      'tenant-a',
      'tenant-b',
      undefined,
      'null',
    ]);
  });

  it('a wrong owner gets the broker’s ConnectionNotFound, not another owner’s cached token', async () => {
    const lambda = new FakeLambda((_name, payload) => {
      if (payload.ownerId !== 'tenant-a')
        throw new FunctionFailure('ConnectionNotFound', 'No such connection');
      return tokenAnswer('tok-a', null);
    });
    const client = clientWith(lambda);
    await client.getToken(CONN, { ownerId: 'tenant-a' });
    await expect(client.getToken(CONN, { ownerId: 'tenant-b' })).rejects.toBeInstanceOf(ConnectionNotFound);
  });

  it('clearCache forgets a connection’s tokens, for every owner', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock, null));
    const client = clientWith(lambda, { now: clock.now });
    await client.getToken(CONN, { ownerId: 'a' });
    await client.getToken('conn_other', { ownerId: 'a' });
    client.clearCache(CONN);
    await client.getToken(CONN, { ownerId: 'a' });
    await client.getToken('conn_other', { ownerId: 'a' });
    expect(lambda.tokenFetches().map((c) => c.payload.connectionId)).toEqual([CONN, 'conn_other', CONN]);
  });

  it('refuses a malformed minValiditySeconds, connectionId or ownerId without invoking', async () => {
    const lambda = new FakeLambda(() => tokenAnswer('t', null));
    const client = clientWith(lambda);
    for (const minValiditySeconds of [-1, 1.5, 86_401, Number.NaN, '300' as any]) {
      await expect(client.getToken(CONN, { minValiditySeconds })).rejects.toBeInstanceOf(InvalidRequest);
    }
    await expect(client.getToken('' as string)).rejects.toBeInstanceOf(InvalidRequest);
    await expect(client.getToken(42 as any)).rejects.toBeInstanceOf(InvalidRequest);
    await expect(client.getToken(CONN, { ownerId: '' })).rejects.toBeInstanceOf(InvalidRequest);
    expect(lambda.calls).toHaveLength(0);
  });

  it('refuses an answer that is not a token', async () => {
    const lambda = new FakeLambda(() => ({ accessToken: 'x' }));
    const err = await clientWith(lambda)
      .getToken(CONN)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as BrokerError).errorType).toBe('InvalidResponse');
  });
});

describe('getToken: single flight', () => {
  it('100 concurrent calls for one owner and connection make 1 invocation and all get its token', async () => {
    const gate = deferred<void>();
    const lambda = new FakeLambda(async () => {
      await gate.promise;
      return tokenAnswer('tok-shared', Date.now() + 3600_000);
    });
    const client = clientWith(lambda);

    const calls = Array.from({ length: 100 }, () => client.getToken(CONN, { ownerId: 'o' }));
    gate.resolve();
    const tokens = await Promise.all(calls);

    expect(lambda.calls).toHaveLength(1);
    expect(new Set(tokens.map((t) => t.accessToken))).toEqual(new Set(['tok-shared']));
  });

  it('concurrent calls for different owners do not share a flight', async () => {
    const gate = deferred<void>();
    const lambda = new FakeLambda(async (_name, payload) => {
      await gate.promise;
      return tokenAnswer(`tok-${payload.ownerId}`, null);
    });
    const client = clientWith(lambda);
    const calls = ['a', 'b', 'a', 'b'].map((ownerId) => client.getToken(CONN, { ownerId }));
    gate.resolve();
    expect((await Promise.all(calls)).map((t) => t.accessToken)).toEqual([
      'tok-a',
      'tok-b',
      'tok-a',
      'tok-b',
    ]);
    expect(lambda.calls).toHaveLength(2);
  });

  it('a failed flight fails every caller waiting on it, and the next call tries again', async () => {
    const gate = deferred<void>();
    let fail = true;
    const lambda = new FakeLambda(async () => {
      await gate.promise;
      if (fail) throw new FunctionFailure('ProviderUnavailable');
      return tokenAnswer('tok-ok', null);
    });
    const client = clientWith(lambda);
    const calls = Array.from({ length: 10 }, () => client.getToken(CONN).catch((e: unknown) => e));
    gate.resolve();
    const results = await Promise.all(calls);
    expect(results.every((r) => r instanceof ProviderUnavailable)).toBe(true);
    expect(lambda.calls).toHaveLength(1);

    fail = false;
    expect((await client.getToken(CONN)).accessToken).toBe('tok-ok');
    expect(lambda.calls).toHaveLength(2);
  });
});

describe('fetch: straight to the CRM', () => {
  it('calls apiBaseUrl + path with the token’s headers and the query, following no redirect', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock));
    const crm = fakeCrm(() => Response.json({ id: 'me' }));
    const client = clientWith(lambda, { now: clock.now, fetch: crm.fetch });

    const res = await client.fetch(CONN, '/lead/', {
      ownerId: 'o',
      query: { _limit: 10, query: 'name:"a b"', _fields: ['id', 'name'] },
      headers: { 'X-Trace': 't1', Authorization: 'Bearer forged' },
    });

    expect(await res.json()).toEqual({ id: 'me' });
    expect(crm.calls).toHaveLength(1);
    const { url, init, authorization } = crm.calls[0]!;
    expect(`${url.origin}${url.pathname}`).toBe(`${API}/lead/`);
    expect([...url.searchParams]).toEqual([
      ['_limit', '10'],
      ['query', 'name:"a b"'],
      ['_fields', 'id'],
      ['_fields', 'name'],
    ]);
    expect(authorization).toBe('Bearer tok-1');
    expect(new Headers(init.headers).get('x-trace')).toBe('t1');
    expect(new Headers(init.headers).get('accept')).toBe('application/json');
    expect(init.redirect).toBe('manual');
    expect(init).not.toHaveProperty('ownerId');
    expect(init).not.toHaveProperty('query');
  });

  it('on a 401 asks token-fetch once with the rejected token’s SHA-256 and retries once with the new token', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock));
    const crm = fakeCrm((_url, auth) =>
      auth === 'Bearer tok-1'
        ? new Response('{"error":"expired"}', { status: 401 })
        : Response.json({ ok: 1 }),
    );
    const client = clientWith(lambda, { now: clock.now, fetch: crm.fetch });

    const res = await client.fetch(CONN, '/me/', { ownerId: 'o', method: 'POST', body: '{"a":1}' });

    expect(res.status).toBe(200);
    expect(crm.calls.map((c) => c.authorization)).toEqual(['Bearer tok-1', 'Bearer tok-2']);
    expect(crm.calls[1]!.init.body).toBe('{"a":1}');
    expect(lambda.tokenFetches().map((c) => c.payload)).toEqual([
      { connectionId: CONN, ownerId: 'o', minValiditySeconds: 300 },
      { connectionId: CONN, ownerId: 'o', minValiditySeconds: 300, rejectedTokenSha256: sha256Hex('tok-1') },
    ]);
    // The new token is cached.
    expect((await client.getToken(CONN, { ownerId: 'o' })).accessToken).toBe('tok-2');
    expect(lambda.tokenFetches()).toHaveLength(2);
  });

  it('retries only once: a second 401 is the answer', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock));
    const crm = fakeCrm(() => new Response('no', { status: 401 }));
    const client = clientWith(lambda, { now: clock.now, fetch: crm.fetch });

    const res = await client.fetch(CONN, '/me/', { ownerId: 'o' });
    expect(res.status).toBe(401);
    expect(crm.calls).toHaveLength(2);
    expect(lambda.tokenFetches()).toHaveLength(2);
  });

  it('100 concurrent calls that see the same token rejected make 1 rejectedTokenSha256 invocation', async () => {
    const clock = fakeClock();
    const gate = deferred<void>();
    const issue = issuingTokens(clock);
    const lambda = new FakeLambda(async (name, payload) => {
      if (payload.rejectedTokenSha256) await gate.promise;
      return issue(name);
    });
    const crm = fakeCrm((_url, auth) =>
      auth === 'Bearer tok-1' ? new Response(null, { status: 401 }) : new Response('ok'),
    );
    const client = clientWith(lambda, { now: clock.now, fetch: crm.fetch });
    await client.getToken(CONN, { ownerId: 'o' });

    const calls = Array.from({ length: 100 }, () => client.fetch(CONN, '/me/', { ownerId: 'o' }));
    // Let every first attempt see its 401 before the one refresh answers.
    while (crm.calls.length < 100) await new Promise((r) => setImmediate(r));
    gate.resolve();
    const statuses = (await Promise.all(calls)).map((r) => r.status);

    expect(statuses.every((s) => s === 200)).toBe(true);
    const rejections = lambda.tokenFetches().filter((c) => c.payload.rejectedTokenSha256);
    expect(rejections).toHaveLength(1);
    expect(rejections[0]!.payload.rejectedTokenSha256).toBe(sha256Hex('tok-1'));
    expect(crm.calls.filter((c) => c.authorization === 'Bearer tok-2')).toHaveLength(100);
  });

  it('a caller whose 401 arrives after the token was replaced uses the replacement without invoking', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock));
    const slow = deferred<Response>();
    let n = 0;
    const crm = fakeCrm((_url, auth) => {
      n += 1;
      if (n === 2) return new Response(null, { status: 401 }); // caller A's first attempt
      if (auth === 'Bearer tok-1') return new Response(null, { status: 401 });
      return new Response('ok');
    });
    const slowFetch = (async (input: any, init: any) => {
      if (new Headers(init.headers).get('x-caller') === 'B' && n === 0) {
        n += 1;
        await slow.promise;
        return new Response(null, { status: 401 });
      }
      return crm.fetch(input, init);
    }) as typeof fetch;
    const client = clientWith(lambda, { now: clock.now, fetch: slowFetch });

    const b = client.fetch(CONN, '/me/', { headers: { 'x-caller': 'B' } });
    while (n === 0) await new Promise((r) => setImmediate(r));
    const a = await client.fetch(CONN, '/me/', { headers: { 'x-caller': 'A' } });
    expect(a.status).toBe(200);
    slow.resolve(new Response(null, { status: 401 }));
    expect((await b).status).toBe(200);
    expect(lambda.tokenFetches().filter((c) => c.payload.rejectedTokenSha256)).toHaveLength(1);
  });

  it('NeedsReauth on the rejection is thrown, and the rejected token leaves the cache', async () => {
    const lambda = new FakeLambda((_name, payload) => {
      if (payload.rejectedTokenSha256) throw new FunctionFailure('NeedsReauth', 'The CRM rejected the grant');
      return tokenAnswer('tok-dead', null);
    });
    const crm = fakeCrm(() => new Response(null, { status: 401 }));
    const client = clientWith(lambda, { fetch: crm.fetch });

    await expect(client.fetch(CONN, '/account')).rejects.toBeInstanceOf(NeedsReauth);
    expect(crm.calls).toHaveLength(1);
    await client.getToken(CONN);
    expect(lambda.tokenFetches()).toHaveLength(3);
  });

  it('a streamed body cannot be sent twice: the 401 is the answer, and the next call gets the new token', async () => {
    const clock = fakeClock();
    const lambda = new FakeLambda(issuingTokens(clock));
    const crm = fakeCrm((_url, auth) =>
      auth === 'Bearer tok-1' ? new Response(null, { status: 401 }) : new Response('ok'),
    );
    const client = clientWith(lambda, { now: clock.now, fetch: crm.fetch });
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('x'));
        c.close();
      },
    });
    const res = await client.fetch(CONN, '/upload', { method: 'POST', body, duplex: 'half' } as RequestInit);
    expect(res.status).toBe(401);
    expect(crm.calls).toHaveLength(1);
    expect((await client.getToken(CONN)).accessToken).toBe('tok-2');
  });

  it('does not retry other statuses', async () => {
    const lambda = new FakeLambda(() => tokenAnswer('t', null));
    const crm = fakeCrm(() => new Response(null, { status: 403 }));
    const client = clientWith(lambda, { fetch: crm.fetch });
    expect((await client.fetch(CONN, '/me/')).status).toBe(403);
    expect(crm.calls).toHaveLength(1);
    expect(lambda.calls).toHaveLength(1);
  });
});

describe('fetch: the token goes only under the API base (paths refused before any invocation)', () => {
  const refused = [
    'https://evil.example/steal',
    'me/',
    '//evil.example/x',
    '/\\evil.example/x',
    '/\\/evil.example',
    '/../admin',
    '/a/../../admin',
    '/./me',
    '/a/./b',
    '/%2e%2e/admin',
    '/%2E%2E/admin',
    '/.%2e/admin',
    '/a%2f..%2fb',
    '/a%5c..',
    '/%252e%252e/admin',
    '/me@evil.example',
    '/@evil.example',
    '/me?x=1',
    '/me#frag',
    '/me /x',
    '/search%20term',
    '/me%C2%A0',
    '/%c3%28',
    '/me\t',
    '/me\r\nHost: evil',
    '/me\u0000',
    '/mé',
    '/a//b',
    '/%00',
    '',
  ];
  it.each(refused)('refuses %j with InvalidRequest, 0 invocations, 0 CRM calls', async (path) => {
    const lambda = new FakeLambda(() => tokenAnswer('t', null));
    const crm = fakeCrm(() => new Response('ok'));
    const client = clientWith(lambda, { fetch: crm.fetch });
    await expect(client.fetch(CONN, path)).rejects.toBeInstanceOf(InvalidRequest);
    expect(lambda.calls).toHaveLength(0);
    expect(crm.calls).toHaveLength(0);
  });

  it('refuses a non-string or overlong path and a malformed query the same way', async () => {
    const lambda = new FakeLambda(() => tokenAnswer('t', null));
    const crm = fakeCrm(() => new Response('ok'));
    const client = clientWith(lambda, { fetch: crm.fetch });
    await expect(client.fetch(CONN, 42 as any)).rejects.toBeInstanceOf(InvalidRequest);
    await expect(client.fetch(CONN, `/${'a'.repeat(2048)}`)).rejects.toBeInstanceOf(InvalidRequest);
    await expect(client.fetch(CONN, '/me/', { query: { a: { b: 1 } as any } })).rejects.toBeInstanceOf(
      InvalidRequest,
    );
    expect(lambda.calls).toHaveLength(0);
    expect(crm.calls).toHaveLength(0);
  });

  it.each(['/me/', '/account', '/users/current', '/lead/lead_abc123/', '/a:b;c=d', '/caf%C3%A9', '/x-y_z~'])(
    'accepts %j and calls it under the API base',
    async (path) => {
      const lambda = new FakeLambda(() => ({ ...tokenAnswer('t', null), apiBaseUrl: `${API}/` }));
      const crm = fakeCrm(() => new Response('ok'));
      const client = clientWith(lambda, { fetch: crm.fetch });
      expect((await client.fetch(CONN, path)).status).toBe(200);
      expect(crm.calls[0]!.url.href).toBe(`${API}${path}`);
    },
  );
});

describe('request: through crm-request', () => {
  it('invokes <prefix>-crm-request with the payload and returns its answer', async () => {
    const answer = {
      status: 429,
      headers: { 'content-type': 'application/json' },
      body: { error: 'slow down' },
      bodyEncoding: 'json',
      bodyTooLarge: false,
      retryAfterSeconds: 7,
    };
    const lambda = new FakeLambda(() => answer);
    const client = clientWith(lambda, { functionPrefix: 'acme-crm' });

    const got = await client.request(CONN, {
      ownerId: 'o',
      method: 'POST',
      path: '/lead/',
      query: { a: '1' },
      headers: { Accept: 'application/json' },
      body: { name: 'x' },
      idempotent: true,
    });

    expect(got).toEqual(answer);
    expect(lambda.calls).toEqual([
      {
        name: 'acme-crm-crm-request',
        payload: {
          connectionId: CONN,
          ownerId: 'o',
          method: 'POST',
          path: '/lead/',
          query: { a: '1' },
          headers: { Accept: 'application/json' },
          body: { name: 'x' },
          idempotent: true,
        },
      },
    ]);
  });

  it('defaults to GET with a null body, and functionNames override the prefix', async () => {
    const lambda = new FakeLambda(() => ({ status: 200, headers: {}, body: null, retryAfterSeconds: null }));
    const client = clientWith(lambda, {
      functionNames: { crmRequest: 'arn:aws:lambda:eu-west-1:123456789012:function:my-crm-request' },
    });
    await client.request(CONN, { path: '/me/' });
    expect(lambda.calls).toEqual([
      {
        name: 'arn:aws:lambda:eu-west-1:123456789012:function:my-crm-request',
        payload: { connectionId: CONN, method: 'GET', path: '/me/', body: null },
      },
    ]);
  });
});

describe('errors: the contract’s names as classes', () => {
  const classes = {
    InvalidRequest,
    ConnectionNotFound,
    NeedsReauth,
    ProviderUnavailable,
    BrokerUnavailable,
  } as const;
  it.each(Object.entries(classes))('%s from token-fetch and crm-request', async (errorType, cls) => {
    const lambda = new FakeLambda(() => {
      throw new FunctionFailure(errorType, `the broker says ${errorType}`);
    });
    const client = clientWith(lambda);
    for (const call of [() => client.getToken(CONN), () => client.request(CONN, { path: '/me/' })]) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      expect(err).toBeInstanceOf(BrokerError);
      expect(err).toMatchObject({ name: errorType, errorType, message: `the broker says ${errorType}` });
    }
  });

  it('any other errorType is a BrokerError carrying the raw type', async () => {
    const lambda = new FakeLambda(() => {
      throw new FunctionFailure('Sandbox.Timedout', 'Task timed out after 10.00 seconds');
    });
    const err = await clientWith(lambda)
      .getToken(CONN)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BrokerError);
    expect(Object.values(classes).some((cls) => err instanceof cls)).toBe(false);
    expect(err).toMatchObject({ name: 'BrokerError', errorType: 'Sandbox.Timedout' });
  });

  it('a failed invocation (the SDK throws) is a BrokerError named after the SDK error, with it as cause', async () => {
    const sdkError = Object.assign(new Error('Function not found: arn:…'), {
      name: 'ResourceNotFoundException',
    });
    const lambda = new FakeLambda(() => {
      throw sdkError;
    });
    const err = await clientWith(lambda)
      .request(CONN, { path: '/me/' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BrokerError);
    expect(err).toMatchObject({ errorType: 'ResourceNotFoundException', cause: sdkError });
  });
});
