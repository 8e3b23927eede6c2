/**
 * The sandbox CRMs enforce their rate limits with their real headers (issue 14):
 * Close `RateLimit` + `Retry-After`, Capsule `X-RateLimit-*` (epoch reset),
 * Copper a bare 429 after its rolling window is full. Real HTTP on loopback,
 * a fake clock.
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type SandboxProvider, crms } from '../../local/sandbox/crms.ts';
import { SandboxRateLimiter, parseSandboxRateLimit } from '../../local/sandbox/rate-limit.ts';

let clock = 1_800_000_000_000;
let limiter: SandboxRateLimiter;
let server: Server;
let base: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    const provider = (req.url ?? '/').slice(1) as SandboxProvider;
    if (limiter.admit(crms[provider], 'acct', res)) res.writeHead(200).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
beforeEach(() => {
  limiter = new SandboxRateLimiter(crms, () => clock, { requests: 3, windowSeconds: 1 });
});

const call = (provider: SandboxProvider) => fetch(`${base}/${provider}`);

describe('sandbox CRM rate limits', () => {
  it('Close: RateLimit fields on every answer, then 429 with Retry-After until the window resets', async () => {
    const first = await call('close');
    expect(first.headers.get('ratelimit')).toBe('limit=3, remaining=2, reset=1.000');
    clock += 400;
    await call('close');
    const third = await call('close');
    expect(third.headers.get('ratelimit')).toBe('limit=3, remaining=0, reset=0.600');
    const refused = await call('close');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('ratelimit')).toBe('limit=3, remaining=0, reset=0.600');
    clock += 600;
    expect((await call('close')).status).toBe(200);
  });

  it('Capsule: X-RateLimit-Limit/Remaining/Reset (epoch seconds), then 429', async () => {
    const first = await call('capsule');
    expect(first.headers.get('x-ratelimit-limit')).toBe('3');
    expect(first.headers.get('x-ratelimit-remaining')).toBe('2');
    expect(first.headers.get('x-ratelimit-reset')).toBe(String(Math.ceil((clock + 1000) / 1000)));
    await call('capsule');
    await call('capsule');
    const refused = await call('capsule');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('x-ratelimit-remaining')).toBe('0');
  });

  it('Copper: a bare 429 once the rolling window holds the limit, freed request by request', async () => {
    for (const step of [0, 300, 300]) {
      clock += step;
      const ok = await call('copper');
      expect(ok.status).toBe(200);
      expect(ok.headers.get('ratelimit')).toBeNull();
      expect(ok.headers.get('x-ratelimit-limit')).toBeNull();
    }
    const refused = await call('copper');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBeNull();
    // Rolling: the first request leaves the window 1 s after it was made, not at a fixed boundary.
    clock += 401;
    expect((await call('copper')).status).toBe(200);
    expect((await call('copper')).status).toBe(429);
  });

  it('logs every request it saw, refused ones too', async () => {
    for (let i = 0; i < 5; i++) await call('close');
    expect(limiter.arrivals().map((a) => a.status)).toEqual([200, 200, 200, 429, 429]);
    limiter.reset();
    expect(limiter.arrivals()).toEqual([]);
  });

  it('defaults keep each CRM’s window, far above the real limits', () => {
    const defaults = new SandboxRateLimiter(crms, () => clock);
    expect(defaults.limit('copper')).toEqual({ requests: 18_000, windowSeconds: 60 });
    expect(defaults.limit('capsule')).toEqual({ requests: 400_000, windowSeconds: 3600 });
    expect(defaults.limit('close')).toEqual({ requests: 1_000, windowSeconds: 1 });
  });

  it('reads SANDBOX_RATE_LIMIT as <requests>/<seconds>', () => {
    expect(parseSandboxRateLimit('10/1')).toEqual({ requests: 10, windowSeconds: 1 });
    for (const bad of ['', '10', '0/1', '10/0', 'x/y', '10/1/1'])
      expect(parseSandboxRateLimit(bad)).toBeUndefined();
  });
});
