/**
 * security.md row 23, the pure part: which paths, queries and headers
 * `crm-request` accepts (functions/core/domain/api-path.ts) and what a CRM
 * answer becomes (crm-call.ts). The integration test
 * (test/integration/crm-request.test.ts) sends the same vectors through the
 * broker and counts the requests reaching the CRM.
 */
import { describe, expect, it } from 'vitest';
import {
  apiUrl,
  checkApiPath,
  checkHeaders,
  checkQuery,
  resolveUnderBase,
} from '../../functions/core/domain/api-path.ts';
import { SSRF_VECTORS } from '../support/ssrf-vectors.ts';
import {
  MAX_ANSWER_BYTES,
  decodeBody,
  retryAfterFrom,
  shapeAnswer,
} from '../../functions/core/domain/crm-call.ts';

const BASE = 'https://api.close.com/api/v1';

describe('checkApiPath and apiUrl: a path stays under the API base', () => {
  it.each(SSRF_VECTORS.map((v) => [JSON.stringify(v), v]))('refuses %s', (_label, path) => {
    expect(() => apiUrl(BASE, path)).toThrow(expect.objectContaining({ name: 'InvalidRequest' }));
  });

  it.each([
    ['/me/', `${BASE}/me/`],
    ['/lead/lead_abc123/', `${BASE}/lead/lead_abc123/`],
    ['/activity/note/', `${BASE}/activity/note/`],
    ["/a-b_c.d~e!$&'()*+,;=:x", `${BASE}/a-b_c.d~e!$&'()*+,;=:x`],
    ['/name%C3%A9', `${BASE}/name%C3%A9`],
    ['/...', `${BASE}/...`],
    ['/.well', `${BASE}/.well`],
  ])('accepts %s', (path, url) => {
    expect(apiUrl(BASE, path).toString()).toBe(url);
  });

  it('keeps the base path of a base with a trailing slash and on another port', () => {
    expect(apiUrl('http://127.0.0.1:3000/sandbox/close-api/api/v1/', '/me/').toString()).toBe(
      'http://127.0.0.1:3000/sandbox/close-api/api/v1/me/',
    );
  });

  it('puts the query in the query string, encoded', () => {
    const url = apiUrl(BASE, '/lead/', { query: 'name:"a b"&c', _limit: '10' });
    expect(url.pathname).toBe('/api/v1/lead/');
    expect(url.searchParams.get('query')).toBe('name:"a b"&c');
    expect(url.searchParams.get('_limit')).toBe('10');
    expect(url.origin).toBe('https://api.close.com');
  });

  it.each([
    '/../x',
    '/me/../../x',
    '/%2e%2e/x',
    '/%2E%2e/x',
    '/./me/',
    '/a/.',
    '/me?x',
    '/me#x',
    '/a\\b',
    '/ x',
  ])('the check after parsing refuses %s on its own', (path) => {
    expect(() => resolveUnderBase(BASE, path)).toThrow(expect.objectContaining({ name: 'InvalidRequest' }));
  });

  it('refuses a non-string path', () => {
    expect(() => checkApiPath(42)).toThrow(expect.objectContaining({ name: 'InvalidRequest' }));
    expect(() => checkApiPath('/' + 'a'.repeat(3000))).toThrow(
      expect.objectContaining({ name: 'InvalidRequest' }),
    );
  });
});

describe('checkQuery', () => {
  it('takes an object of strings, nothing else', () => {
    expect(checkQuery(undefined)).toEqual({});
    expect(checkQuery({ a: '1' })).toEqual({ a: '1' });
    for (const bad of [[], 'a=1', { a: 1 }, { a: null }, { '': 'x' }, { a: ['1'] }]) {
      expect(() => checkQuery(bad)).toThrow(expect.objectContaining({ name: 'InvalidRequest' }));
    }
  });
});

describe('checkHeaders', () => {
  it('takes valid names and values', () => {
    expect(checkHeaders({ Accept: 'application/json', 'X-Custom': 'a b' })).toEqual({
      Accept: 'application/json',
      'X-Custom': 'a b',
    });
  });

  it.each([
    'Authorization',
    'authorization',
    'Proxy-Authorization',
    'Host',
    'Cookie',
    'Connection',
    'Transfer-Encoding',
    'TE',
    'Upgrade',
    'Keep-Alive',
    'Content-Length',
    'X-PW-AccessToken',
  ])('refuses %s', (name) => {
    expect(() => checkHeaders({ [name]: 'x' })).toThrow(expect.objectContaining({ name: 'InvalidRequest' }));
  });

  it('refuses bad names, CR/LF in values, duplicates by case and non-strings', () => {
    for (const bad of [
      { 'Bad Name': 'x' },
      { 'X-A:': 'x' },
      { 'X-A': 'x\r\nHost: evil' },
      { 'X-A': 'x\n' },
      { 'X-A': 1 },
      { 'X-A': 'a', 'x-a': 'b' },
      ['Accept'],
    ]) {
      expect(() => checkHeaders(bad)).toThrow(expect.objectContaining({ name: 'InvalidRequest' }));
    }
  });
});

describe('the answer', () => {
  const bytes = (s: string) => new TextEncoder().encode(s);

  it('parses JSON, keeps text, base64-encodes binary, null for no body', () => {
    expect(decodeBody('application/json; charset=utf-8', bytes('{"a":1}'))).toEqual({
      body: { a: 1 },
      bodyEncoding: 'json',
    });
    expect(decodeBody('application/problem+json', bytes('{"a":1}'))).toEqual({
      body: { a: 1 },
      bodyEncoding: 'json',
    });
    expect(decodeBody('application/json', bytes('not json'))).toEqual({
      body: 'not json',
      bodyEncoding: 'text',
    });
    expect(decodeBody('text/csv', bytes('a,b'))).toEqual({ body: 'a,b', bodyEncoding: 'text' });
    expect(decodeBody('application/pdf', new Uint8Array([0x25, 0x50, 0xff]))).toEqual({
      body: Buffer.from([0x25, 0x50, 0xff]).toString('base64'),
      bodyEncoding: 'base64',
    });
    expect(decodeBody(undefined, new Uint8Array([0xff, 0xfe]))).toMatchObject({ bodyEncoding: 'base64' });
    expect(decodeBody('application/json', null)).toEqual({ body: null, bodyEncoding: 'none' });
  });

  it('drops cookies and hop-by-hop headers, reads Retry-After on a 429', () => {
    const answer = shapeAnswer(
      {
        status: 429,
        headers: { 'retry-after': '7', 'set-cookie': 'a=b', connection: 'close', 'x-rate': '1' },
        body: null,
        tooLarge: false,
      },
      Date.now(),
    );
    expect(answer).toEqual({
      status: 429,
      headers: { 'retry-after': '7', 'x-rate': '1' },
      body: null,
      bodyEncoding: 'none',
      bodyTooLarge: false,
      retryAfterSeconds: 7,
    });
    expect(
      retryAfterFrom({ 'retry-after': new Date(Date.now() + 10_500).toUTCString() }, Date.now()),
    ).toBeGreaterThanOrEqual(9);
    expect(retryAfterFrom({}, Date.now())).toBeNull();
  });

  it('withholds a body whose answer would not fit a Lambda response, keeping status and headers', () => {
    // Every byte a quote: JSON escaping doubles it.
    const quotes = bytes('"'.repeat(3 * 1024 * 1024));
    const answer = shapeAnswer(
      { status: 200, headers: { 'content-type': 'text/plain' }, body: quotes, tooLarge: false },
      0,
    );
    expect(answer).toMatchObject({ status: 200, body: null, bodyTooLarge: true });
    expect(Buffer.byteLength(JSON.stringify(answer))).toBeLessThan(MAX_ANSWER_BYTES);
    const over = shapeAnswer({ status: 201, headers: {}, body: null, tooLarge: true }, 0);
    expect(over).toMatchObject({ status: 201, body: null, bodyTooLarge: true });
  });
});
