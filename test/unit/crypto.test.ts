import { describe, expect, it } from 'vitest';
import {
  isRandomToken,
  pkceChallenge,
  randomToken,
  safeEqual,
  sha256Hex,
} from '../../functions/core/domain/secrets.ts';

describe('PKCE (RFC 7636)', () => {
  it('computes the S256 challenge of the RFC 7636 Appendix B vector', () => {
    expect(pkceChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')).toBe(
      'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    );
  });

  it('uses 32 random bytes for verifiers and states: 43 base64url characters, never repeating', () => {
    const a = randomToken();
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(randomToken()).not.toBe(a);
    expect(isRandomToken(a)).toBe(true);
  });
});

describe('safeEqual (security.md row 16)', () => {
  it('is true only for equal strings', () => {
    expect(safeEqual(sha256Hex('a'), sha256Hex('a'))).toBe(true);
    expect(safeEqual(sha256Hex('a'), sha256Hex('b'))).toBe(false);
  });

  it('returns false, never throws, for unequal lengths, empty or missing inputs', () => {
    expect(safeEqual('abc', 'abcd')).toBe(false);
    expect(safeEqual('', 'a')).toBe(false);
    expect(safeEqual('', '')).toBe(true);
    expect(safeEqual(undefined, 'a')).toBe(false);
    expect(safeEqual('a', undefined)).toBe(false);
  });
});

describe('isRandomToken', () => {
  it('refuses anything but the exact shape', () => {
    for (const bad of [
      '',
      'x',
      `${randomToken()},${randomToken()}`,
      `${randomToken()}=`,
      42,
      null,
      undefined,
    ]) {
      expect(isRandomToken(bad)).toBe(false);
    }
  });
});
