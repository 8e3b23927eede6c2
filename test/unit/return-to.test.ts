import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { InvalidRequest } from '../../functions/core/domain/errors.ts';
import { returnTo } from '../../functions/adapters/lambda/validate.ts';

const config = loadConfig({
  LOCAL_MASTER_KEY: Buffer.alloc(32).toString('base64'),
  RETURN_TO_ORIGINS: 'https://app.example.com,http://localhost:3000',
});

describe('returnTo allow-list (security.md row 7: open redirect)', () => {
  it('accepts URLs on an allowed origin exactly', () => {
    expect(returnTo(config, 'https://app.example.com/crm/done')).toBe('https://app.example.com/crm/done');
    expect(returnTo(config, 'https://app.example.com/crm/done?x=1#frag')).toBe(
      'https://app.example.com/crm/done?x=1#frag',
    );
    expect(returnTo(config, 'http://localhost:3000/')).toBe('http://localhost:3000/');
    expect(returnTo(config, undefined)).toBeUndefined();
  });

  const hostile = [
    '//evil.com',
    '/\\evil.com',
    '/crm/done',
    'https://app.example.com.evil.com/',
    'https://evil.com/https://app.example.com/',
    'https://app.example.com@evil.com/',
    'https://user:pass@app.example.com/',
    'https://app.example.com%2F@evil.com/',
    'https://app.example.com%2eevil.com/',
    'http://app.example.com/',
    'https://app.example.com:8443/',
    'https://APP.example.com.evil.com/',
    'javascript:alert(1)',
    'JaVaScRiPt:alert(document.domain)//https://app.example.com/',
    'data:text/html,<script>alert(1)</script>',
    'https://app.example.com/\r\nLocation: https://evil.com',
    'https://app.example.com/%0d%0aSet-Cookie:x=y\n',
    'https://app.example.com\\@evil.com/',
    ' https://app.example.com/',
    'http://localhost:3001/',
    'http://127.0.0.1:3000/',
    'https://app.example.com/' + 'a'.repeat(3000),
    '',
  ];
  it.each(hostile)('refuses %j', (value) => {
    expect(() => returnTo(config, value)).toThrow(InvalidRequest);
  });

  it('refuses non-strings', () => {
    for (const value of [42, true, {}, ['https://app.example.com/']]) {
      expect(() => returnTo(config, value)).toThrow(InvalidRequest);
    }
  });
});

describe('configuration', () => {
  it('refuses a RETURN_TO_ORIGINS entry with a path', () => {
    expect(() =>
      loadConfig({
        LOCAL_MASTER_KEY: Buffer.alloc(32).toString('base64'),
        RETURN_TO_ORIGINS: 'https://a.com/x',
      }),
    ).toThrow(/RETURN_TO_ORIGINS/);
  });

  it('needs a key: KMS_KEY_ID, or locally LOCAL_MASTER_KEY', () => {
    expect(() => loadConfig({})).toThrow(/KMS_KEY_ID/);
  });

  it('refuses plain-http provider endpoints off loopback', () => {
    expect(() =>
      loadConfig({
        LOCAL_MASTER_KEY: Buffer.alloc(32).toString('base64'),
        CLOSE_TOKEN_URL: 'http://evil.test/t',
      }),
    ).toThrow(/CLOSE_TOKEN_URL/);
  });
});
