/**
 * security.md row 15: thousands of random and hostile inputs to every public
 * route and every invoked function. No 5xx, no unhandled rejection, no item
 * written (a bad input never half-writes anything).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpRoutes } from '../../manifest/functions.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;
let base: string;
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  broker = await startTestBroker();
  base = broker.server.url;
});
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await broker?.close();
});

const itemCount = async () => (await broker.scan()).length;

const hostileString = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.string({ unit: 'grapheme', maxLength: 64 }),
  fc.constantFrom(
    '',
    '%',
    '%00',
    '%ff%fe',
    '\u0000',
    '\r\nSet-Cookie: x=y',
    '<script>alert(1)</script>',
    '../../etc/passwd',
    'A'.repeat(43),
    'A'.repeat(5000),
    '𝕏'.repeat(100),
    '{"$ne":null}',
    'conn_' + 'f'.repeat(32),
    'javascript:alert(1)',
    '__proto__',
    'constructor',
  ),
);

const param = fc.tuple(
  fc.constantFrom('state', 'code', 'error', 'error_description', 'iss', 'session', 'session', 'state', 'x'),
  hostileString,
);

const queryString = fc.oneof(
  fc
    .array(param, { maxLength: 6 })
    .map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')),
  // Raw, badly encoded query strings.
  fc.constantFrom('%', 'state=%zz', 'state=%E0%A4%A', 'code&state', '==', 'state=a&state=b', '%00=%00'),
);

const cookieHeader = fc.option(
  fc
    .array(fc.tuple(fc.constantFrom('__Host-crm-broker-flow', 'other', ''), hostileString), { maxLength: 3 })
    .map((pairs) =>
      pairs.map(([k, v]) => `${k}=${v.replace(/[;\r\n\u0000-\u001f\u007f-\uffff]/g, '')}`).join('; '),
    ),
  { nil: undefined },
);

const provider = fc.constantFrom('copper', 'capsule', 'close', 'salesforce', '%2e%2e', 'CLOSE', '');

describe('fuzzing the public routes', () => {
  it('answers random and hostile requests with no 5xx and writes nothing', async () => {
    const before = await itemCount();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...httpRoutes),
        provider,
        queryString,
        cookieHeader,
        fc.option(fc.oneof(queryString, fc.string({ maxLength: 200 }), fc.constant('x'.repeat(20_000))), {
          nil: undefined,
        }),
        fc.constantFrom(
          'application/x-www-form-urlencoded',
          'application/json',
          'text/plain',
          'multipart/form-data; boundary=x',
        ),
        async (route, p, query, cookie, body, contentType) => {
          const path = route.path
            .replace('{provider}', p)
            .replace('{connectionId}', encodeURIComponent(p || 'x'));
          const headers: Record<string, string> = {};
          if (cookie) headers.cookie = cookie;
          if (body !== undefined) headers['content-type'] = contentType;
          const res = await fetch(`${base}${path}?${query}`, {
            method: route.method,
            headers,
            ...(route.method === 'POST' && body !== undefined ? { body } : {}),
            redirect: 'manual',
          });
          await res.arrayBuffer();
          expect(res.status, `${route.method} ${path}?${query}`).toBeLessThan(500);
        },
      ),
      { numRuns: 1500 },
    );
    expect(await itemCount()).toBe(before);
    expect(unhandled).toEqual([]);
  });
});

const jsonValue = fc.jsonValue({ maxDepth: 3 });
const payloadFor = (keys: string[]) =>
  fc.oneof(
    jsonValue,
    fc.dictionary(fc.constantFrom(...keys, 'extra', '__proto__'), fc.oneof(jsonValue, hostileString), {
      maxKeys: 5,
    }),
  );

describe('fuzzing the invoked functions', () => {
  it.each([
    ['connect-session', ['ownerId', 'provider', 'returnTo']],
    ['token-fetch', ['connectionId', 'minValiditySeconds', 'forceRefresh']],
    ['connections', ['action', 'ownerId', 'connectionId']],
    ['refresh', ['connectionId']],
  ])('%s answers only typed errors and writes nothing', async (name, keys) => {
    const before = await itemCount();
    await fc.assert(
      fc.asyncProperty(payloadFor(keys), async (payload) => {
        const out = await broker.invoke(name, payload);
        if (!out.ok) expect(['InvalidRequest', 'ConnectionNotFound']).toContain(out.errorType);
      }),
      { numRuns: 500 },
    );
    // connect-session may legitimately create sessions for valid payloads; nothing else writes.
    if (name !== 'connect-session') expect(await itemCount()).toBe(before);
    expect(unhandled).toEqual([]);
  });

  it('the Invoke API answers a body that is not JSON with a 400, as Lambda does', async () => {
    const res = await fetch(`${base}/2015-03-31/functions/token-fetch/invocations`, {
      method: 'POST',
      body: '{nope',
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-amzn-errortype')).toBe('InvalidRequestContentException');
  });
});
