/**
 * The local server's guard for the Invoke API and the IAM routes (security.md row 22), as a pure rule
 * over request headers; test/integration/local-server-guard.test.ts proves it on the running server.
 */
import { describe, expect, it } from 'vitest';
import { demoActionRefusal, refusalReasons, serviceRequestRefusal } from '../../local/loopback-guard.ts';

const PORT = 3000;
const refusal = (headers: Record<string, string | string[] | undefined>, port = PORT) =>
  serviceRequestRefusal({ headers }, port);

describe('serviceRequestRefusal (security.md row 22)', () => {
  it.each([
    [{ host: 'localhost:3000' }],
    [{ host: '127.0.0.1:3000' }],
    [{ host: '[::1]:3000' }],
    [{ host: 'LocalHost:3000' }],
    [{ host: '127.0.0.1:3000', origin: 'http://127.0.0.1:3000' }],
    [{ host: '127.0.0.1:3000', origin: 'http://localhost:3000', 'sec-fetch-site': 'same-origin' }],
    [{ host: 'localhost:3000', origin: 'http://[::1]:3000' }],
    [{ host: 'localhost:3000', 'sec-fetch-site': 'none' }],
  ])('lets a loopback caller on this port through: %o', (headers) => {
    expect(refusal(headers)).toBeUndefined();
  });

  it.each([
    [{}],
    [{ host: '' }],
    [{ host: 'rebind.example' }],
    [{ host: 'rebind.example:3000' }],
    [{ host: 'rebind.localhost:3000' }],
    [{ host: 'localhost.:3000' }],
    [{ host: '127.0.0.1.nip.io:3000' }],
    [{ host: '127.0.0.2:3000' }],
    [{ host: '0.0.0.0:3000' }],
    [{ host: '[::ffff:127.0.0.1]:3000' }],
    [{ host: 'localhost:3001' }],
    [{ host: 'localhost:03000' }],
    [{ host: 'localhost' }],
    [{ host: '127.0.0.1' }],
    [{ host: 'localhost:3000 ' }],
    [{ host: 'user@localhost:3000' }],
  ])('refuses a Host that is not this loopback address and port: %o', (headers) => {
    expect(refusal(headers)).toBe(refusalReasons.host);
  });

  it('takes a bare loopback name only on port 80, where it means that port', () => {
    expect(refusal({ host: 'localhost' }, 80)).toBeUndefined();
    expect(refusal({ host: '127.0.0.1', origin: 'http://127.0.0.1' }, 80)).toBeUndefined();
    expect(refusal({ host: 'rebind.example' }, 80)).toBe(refusalReasons.host);
  });

  it.each([
    'https://evil.example',
    'null',
    '',
    'http://localhost:3001',
    'http://localhost',
    'https://localhost:3000',
    'http://localhost:3000/',
    'http://localhost:3000.evil.example',
    'http://rebind.example:3000',
    'http://localhost:3000, https://evil.example',
  ])('refuses Origin %j', (origin) => {
    expect(refusal({ host: 'localhost:3000', origin })).toBe(refusalReasons.origin);
  });

  it('refuses a repeated Origin', () => {
    expect(
      refusal({ host: 'localhost:3000', origin: ['http://localhost:3000', 'https://evil.example'] }),
    ).toBe(refusalReasons.origin);
  });

  it.each(['cross-site', 'same-site', '', 'Same-Origin', 'same-origin, cross-site'])(
    'refuses Sec-Fetch-Site %j',
    (site) => {
      expect(refusal({ host: 'localhost:3000', 'sec-fetch-site': site })).toBe(refusalReasons.fetchSite);
    },
  );

  it('names no header value in its reason', () => {
    for (const reason of Object.values(refusalReasons)) expect(reason).not.toMatch(/evil|rebind|null|\d/);
  });
});

describe('demoActionRefusal: the Host check the demo page actions add to their own', () => {
  it('takes the loopback hosts and the host of PUBLIC_BASE_URL', () => {
    for (const host of ['localhost:3000', '127.0.0.1:3000', '[::1]:3000', 'tunnel.example'])
      expect(
        demoActionRefusal({ headers: { host, origin: 'null' } }, PORT, 'tunnel.example'),
      ).toBeUndefined();
  });
  it.each(['rebind.example:3000', 'rebind.example', 'localhost:3001', 'tunnel.example:3000'])(
    'refuses Host %j',
    (host) => {
      expect(demoActionRefusal({ headers: { host } }, PORT, 'tunnel.example')).toBe(refusalReasons.host);
    },
  );
  it('refuses a request without Host', () => {
    expect(demoActionRefusal({ headers: {} }, PORT, 'localhost:3000')).toBe(refusalReasons.host);
  });
});
