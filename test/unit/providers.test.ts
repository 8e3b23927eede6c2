import { describe, expect, it } from 'vitest';
import {
  buildAuthorizationUrl,
  processTokenResponse,
  TokenEndpointRejected,
} from '../../functions/adapters/crm/oauth-client.ts';
import { ProviderProtocolError } from '../../functions/adapters/crm/crm-http.ts';
import { providerIds, resolveProviders } from '../../functions/core/domain/providers.ts';

const registry = resolveProviders({});

describe('provider registry: each CRM as data', () => {
  it("points at each CRM's real hosts and paths", () => {
    expect(registry.copper.authorizeUrl).toBe('https://app.copper.com/oauth/authorize');
    expect(registry.copper.tokenUrl).toBe('https://app.copper.com/oauth/token');
    expect(registry.copper.revokeUrl).toBeUndefined();
    expect(registry.capsule.authorizeUrl).toBe('https://api.capsulecrm.com/oauth/authorise');
    expect(registry.capsule.revokeUrl).toBe('https://api.capsulecrm.com/oauth/token/revoke');
    expect(registry.close.authorizeUrl).toBe('https://app.close.com/oauth2/authorize/');
    expect(registry.close.tokenUrl).toBe('https://api.close.com/oauth2/token/');
    expect(registry.close.revokeUrl).toBe('https://api.close.com/oauth2/revoke/');
  });

  it('carries scopes, PKCE and refresh behaviour per CRM', () => {
    expect(registry.copper.scopes).toEqual(['developer/v1/all']);
    expect(registry.capsule.scopes).toEqual(['read', 'write']);
    expect(registry.close.scopes).toEqual(['all.full_access', 'offline_access']);
    expect(registry.close.pkce).toBe(true);
    expect(registry.copper.refreshable).toBe(false);
  });

  it('lets every endpoint and scope be overridden from the environment', () => {
    for (const id of providerIds) {
      const p = id.toUpperCase();
      const r = resolveProviders({
        [`${p}_AUTHORIZE_URL`]: 'https://staging.test/a',
        [`${p}_TOKEN_URL`]: 'http://127.0.0.1:9/t',
        [`${p}_REVOKE_URL`]: 'https://staging.test/r',
        [`${p}_API_BASE_URL`]: 'https://staging.test/api/',
        [`${p}_SCOPES`]: 'one two',
      })[id];
      expect(r).toMatchObject({
        authorizeUrl: 'https://staging.test/a',
        tokenUrl: 'http://127.0.0.1:9/t',
        revokeUrl: 'https://staging.test/r',
        apiBaseUrl: 'https://staging.test/api',
        scopes: ['one', 'two'],
      });
    }
  });

  it('maps identity answers to the account: Close per organization, Capsule by subdomain', () => {
    expect(
      registry.close.account(
        { access_token: 'x', organization_id: 'orga_2' },
        {
          me: {
            email: 'a@acme.test',
            organizations: [
              { id: 'orga_1', name: 'One' },
              { id: 'orga_2', name: 'Two' },
            ],
          },
        },
      ),
    ).toEqual({ id: 'orga_2', name: 'Two', userEmail: 'a@acme.test' });
    expect(
      registry.capsule.account(
        { access_token: 'x', subdomain: 'acme' },
        { site: { site: { name: 'Acme', subdomain: 'acme' } }, user: { user: { id: 1 } } },
      ),
    ).toEqual({ id: 'acme', name: 'Acme', userEmail: null });
    expect(
      registry.copper.account(
        { access_token: 'x' },
        { account: { id: 42, name: 'Acme' }, me: { email: 'a@b.c' } },
      ),
    ).toEqual({ id: '42', name: 'Acme', userEmail: 'a@b.c' });
    expect(() => registry.copper.account({ access_token: 'x' }, { account: {}, me: {} })).toThrow();
  });
});

describe('authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)', () => {
  it('carries response_type, client_id, redirect_uri, scope, state and S256 only', () => {
    const url = new URL(
      buildAuthorizationUrl(registry.close, {
        clientId: 'cid',
        redirectUri: 'https://b.test/callback/close',
        state: 's',
        codeChallenge: 'c',
      }),
    );
    expect(url.origin + url.pathname).toBe('https://app.close.com/oauth2/authorize/');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      response_type: 'code',
      client_id: 'cid',
      redirect_uri: 'https://b.test/callback/close',
      scope: 'all.full_access offline_access',
      state: 's',
      code_challenge: 'c',
      code_challenge_method: 'S256',
    });
  });
});

describe('token response processing (RFC 6749 §5)', () => {
  it('keeps the fields the broker uses, including the CRMs extras', () => {
    expect(
      processTokenResponse(200, {
        access_token: 'a',
        token_type: 'bearer',
        expires_in: '3600',
        refresh_token: 'r',
        organization_id: 'orga_1',
        user_id: 'user_1',
        subdomain: 'acme',
        extra: 'ignored',
      }),
    ).toEqual({
      access_token: 'a',
      token_type: 'Bearer',
      expires_in: 3600,
      refresh_token: 'r',
      organization_id: 'orga_1',
      user_id: 'user_1',
      subdomain: 'acme',
    });
  });

  it('turns a 400/401 into a rejection carrying the RFC 6749 error code', () => {
    const err = (() => {
      try {
        processTokenResponse(400, { error: 'invalid_grant' });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(TokenEndpointRejected);
    expect((err as TokenEndpointRejected).oauthError).toBe('invalid_grant');
    expect(() => processTokenResponse(401, 'not json')).toThrow(TokenEndpointRejected);
  });

  it('treats malformed successes as protocol errors, never as a dead grant', () => {
    for (const body of [
      undefined,
      null,
      [],
      'html',
      {},
      { access_token: '' },
      { access_token: 'a', expires_in: -1 },
    ]) {
      expect(() => processTokenResponse(200, body)).toThrow(ProviderProtocolError);
    }
    expect(() => processTokenResponse(200, { access_token: 'a', token_type: 'mac' })).toThrow(
      ProviderProtocolError,
    );
    expect(() => processTokenResponse(200, { access_token: 'a'.repeat(9000) })).toThrow(
      ProviderProtocolError,
    );
  });
});
