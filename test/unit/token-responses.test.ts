/**
 * What a token endpoint's answer means (RFC 6749 §5.1, §5.2): which refusals end
 * a grant, which blame the broker, which are transient; and how strictly the
 * lifetime of a fresh token is read.
 */
import { describe, expect, it } from 'vitest';
import {
  TokenEndpointRejected,
  classifyTokenRefusal,
  processTokenResponse,
} from '../../functions/adapters/crm/oauth-client.ts';
import { ProviderProtocolError } from '../../functions/adapters/crm/crm-http.ts';
import { MIN_LIFETIME_SECONDS, tokenExpiry } from '../../functions/core/domain/token-set.ts';

const rejection = (status: number, body: unknown): TokenEndpointRejected => {
  try {
    processTokenResponse(status, body);
  } catch (err) {
    if (err instanceof TokenEndpointRejected) return err;
    throw err;
  }
  throw new Error('processTokenResponse accepted a refusal');
};

describe('a refused token request (RFC 6749 §5.2)', () => {
  it.each([
    [400, 'invalid_grant'],
    [401, 'invalid_grant'],
  ])('%i %s: the grant is dead', (status, code) => {
    expect(classifyTokenRefusal(status, code)).toBe('grant_dead');
  });

  it.each([
    [400, 'invalid_client'],
    [401, 'invalid_client'],
    [400, 'unauthorized_client'],
    [401, 'unauthorized_client'],
  ])("%i %s: the CRM rejects the broker's client", (status, code) => {
    expect(classifyTokenRefusal(status, code)).toBe('client_rejected');
  });

  it.each([
    [400, 'invalid_request'],
    [400, 'unsupported_grant_type'],
    [400, 'invalid_scope'],
    [401, 'invalid_request'],
  ])('%i %s: the CRM rejects what the broker sent', (status, code) => {
    expect(classifyTokenRefusal(status, code)).toBe('request_rejected');
  });

  it.each([
    [403, 'invalid_grant'],
    [403, undefined],
    [404, 'invalid_grant'],
    [404, undefined],
    [408, 'invalid_grant'],
    [408, undefined],
    [425, 'invalid_grant'],
    [425, undefined],
    [429, 'invalid_grant'],
    [400, undefined],
    [401, undefined],
    [401, 'access_denied'],
    [400, 'Invalid_Grant'],
    [400, '__proto__'],
    [400, 'toString'],
    [400, 'constructor'],
    [400, 'hasOwnProperty'],
  ])('%i %s: says nothing about the grant, so transient', (status, code) => {
    expect(classifyTokenRefusal(status, code)).toBe('transient');
  });

  it('carries the classification on the rejection a 4xx becomes', () => {
    expect(rejection(400, { error: 'invalid_grant' }).refusal).toBe('grant_dead');
    expect(rejection(401, { error: 'invalid_client' }).refusal).toBe('client_rejected');
    expect(rejection(400, { error: 'unsupported_grant_type' }).refusal).toBe('request_rejected');
    expect(rejection(400, {}).refusal).toBe('transient');
  });

  it("treats a WAF's HTML page as transient, whatever its status", () => {
    for (const status of [400, 401, 403, 404, 408, 425]) {
      const err = rejection(status, '<html><body>Request blocked: invalid_grant</body></html>');
      expect(err.status).toBe(status);
      expect(err.oauthError).toBeUndefined();
      expect(err.refusal).toBe('transient');
    }
  });

  it('does not let a 403 or 404 end a grant, even when it names invalid_grant', () => {
    expect(rejection(403, { error: 'invalid_grant' }).refusal).toBe('transient');
    expect(rejection(404, { error: 'invalid_grant' }).refusal).toBe('transient');
  });

  it('ignores an error code that is not a short printable string', () => {
    for (const error of [
      42,
      ['invalid_grant'],
      { code: 'invalid_grant' },
      '',
      'x'.repeat(65),
      'invalid\ngrant',
    ]) {
      const err = rejection(400, { error });
      expect(err.oauthError).toBeUndefined();
      expect(err.refusal).toBe('transient');
    }
  });

  it('never reads a 5xx as a refusal', () => {
    expect(() => processTokenResponse(500, { error: 'invalid_grant' })).toThrow(ProviderProtocolError);
  });
});

describe('expires_in of a token response (RFC 6749 §5.1)', () => {
  it.each([
    [3600, 3600],
    ['3600', 3600],
    [1, 1],
  ])('accepts %j as %i seconds', (value, seconds) => {
    expect(processTokenResponse(200, { access_token: 'a', expires_in: value }).expires_in).toBe(seconds);
  });

  it('leaves it out when the CRM sent none', () => {
    expect(processTokenResponse(200, { access_token: 'a' })).not.toHaveProperty('expires_in');
    expect(processTokenResponse(200, { access_token: 'a', expires_in: null })).not.toHaveProperty(
      'expires_in',
    );
  });

  it.each([
    0.5,
    0,
    -1,
    true,
    '0x3c',
    [60],
    '60.0',
    ' 60',
    '1e3',
    '',
    '0',
    '-60',
    Number.NaN,
    Number.POSITIVE_INFINITY,
    1e12,
    { seconds: 60 },
  ])('refuses %j as a protocol error, never coercing it', (value) => {
    expect(() => processTokenResponse(200, { access_token: 'a', expires_in: value })).toThrow(
      ProviderProtocolError,
    );
  });
});

describe('the expiry of a fresh token', () => {
  const now = Date.parse('2026-11-23T10:00:00Z');

  it('never expires when the CRM gave no lifetime', () => {
    expect(tokenExpiry(now, undefined)).toEqual({ expiresAt: null, issuedLifetimeSeconds: null });
  });

  it('expires expires_in seconds from now', () => {
    expect(tokenExpiry(now, 3600)).toEqual({ expiresAt: now + 3600_000, issuedLifetimeSeconds: 3600 });
  });

  it('plans with at least MIN_LIFETIME_SECONDS when the CRM says 1 s', () => {
    expect(MIN_LIFETIME_SECONDS).toBe(60);
    expect(tokenExpiry(now, 1)).toEqual({ expiresAt: now + 60_000, issuedLifetimeSeconds: 60 });
    expect(tokenExpiry(now, 59)).toEqual({ expiresAt: now + 60_000, issuedLifetimeSeconds: 60 });
    expect(tokenExpiry(now, 61)).toEqual({ expiresAt: now + 61_000, issuedLifetimeSeconds: 61 });
  });
});
