/**
 * The OAuth 2.0 client side (RFC 6749), each step split into building the
 * request and processing the response, driven by the provider registry.
 */
import { ProviderUnavailable } from '../../core/domain/errors.ts';
import {
  AccessTokenRejected,
  ProviderProtocolError,
  type RequestLimits,
  type RetryPolicy,
  TokenEndpointRejected,
} from '../../core/domain/crm-errors.ts';
import { type ProviderHttp, noRetry } from './crm-http.ts';
import { processTokenResponse } from '../../core/domain/oauth-protocol.ts';

export {
  type AuthorizationRequest,
  buildAuthorizationUrl,
  processTokenResponse,
} from '../../core/domain/oauth-protocol.ts';
import type { Account, ProviderDefinition, TokenResponse } from '../../core/domain/providers.ts';

export interface ClientSecrets {
  clientId(provider: ProviderDefinition): string;
  clientSecret(provider: ProviderDefinition): Promise<string>;
  /** Drops a cached secret, so the next request reads it again (after the CRM refused it). */
  forget(): void;
}

export class OAuthClient {
  constructor(
    private readonly http: ProviderHttp,
    private readonly secrets: ClientSecrets,
  ) {}

  private async tokenRequest(
    provider: ProviderDefinition,
    params: Record<string, string>,
    policy: RetryPolicy,
    limits: RequestLimits = {},
  ): Promise<TokenResponse> {
    const body = {
      ...params,
      client_id: this.secrets.clientId(provider),
      client_secret: await this.secrets.clientSecret(provider),
    };
    const encoded =
      provider.tokenRequestEncoding === 'json'
        ? { type: 'application/json', text: JSON.stringify(body) }
        : { type: 'application/x-www-form-urlencoded', text: new URLSearchParams(body).toString() };
    const response = await this.http.request(
      provider.tokenUrl,
      { method: 'POST', headers: { 'Content-Type': encoded.type }, body: encoded.text },
      policy,
      limits,
    );
    try {
      return processTokenResponse(response.status, response.json);
    } catch (err) {
      // An operator may be fixing the secret right now: read it afresh next time, not at the next cold start.
      if (err instanceof TokenEndpointRejected && err.refusal === 'client_rejected') this.secrets.forget();
      throw err;
    }
  }

  /** RFC 6749 §4.1.3. Not retried: an authorization code is single-use. */
  exchangeCode(
    provider: ProviderDefinition,
    request: { code: string; redirectUri: string; codeVerifier?: string },
  ): Promise<TokenResponse> {
    const params: Record<string, string> = {
      grant_type: 'authorization_code',
      code: request.code,
      redirect_uri: request.redirectUri,
    };
    if (request.codeVerifier) params.code_verifier = request.codeVerifier;
    return this.tokenRequest(provider, params, noRetry);
  }

  /**
   * RFC 6749 §6. `limits` bound when attempts may start, never a sent one: at a
   * CRM that rotates refresh tokens an answer dropped after the CRM committed it
   * loses the grant (security.md row 18).
   */
  refresh(
    provider: ProviderDefinition,
    refreshToken: string,
    policy: RetryPolicy,
    limits: RequestLimits,
  ): Promise<TokenResponse> {
    return this.tokenRequest(
      provider,
      { grant_type: 'refresh_token', refresh_token: refreshToken },
      policy,
      limits,
    );
  }

  /** The client secret, read before a refresh is sent (so its cost counts before the point of no return). */
  async prepare(provider: ProviderDefinition): Promise<void> {
    this.secrets.clientId(provider);
    await this.secrets.clientSecret(provider);
  }

  /** RFC 7009 revocation, where the CRM has an endpoint. Failures are reported, not thrown. */
  async revoke(provider: ProviderDefinition, token: string): Promise<'revoked' | 'unsupported' | 'failed'> {
    if (!provider.revokeUrl) return 'unsupported';
    const params: Record<string, string> = { token };
    if (provider.revokeWithClientCredentials) {
      params.client_id = this.secrets.clientId(provider);
      params.client_secret = await this.secrets.clientSecret(provider);
    }
    try {
      const response = await this.http.request(provider.revokeUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(params).toString(),
      });
      return response.status >= 200 && response.status < 300 ? 'revoked' : 'failed';
    } catch {
      return 'failed';
    }
  }

  private async apiGet(provider: ProviderDefinition, accessToken: string, path: string): Promise<unknown> {
    const response = await this.http.request(`${provider.apiBaseUrl}${path}`, {
      method: 'GET',
      headers: { ...provider.apiHeaders, Authorization: `Bearer ${accessToken}` },
    });
    if (response.status === 401) throw new AccessTokenRejected(response.status);
    if (response.status < 200 || response.status >= 300) {
      throw new ProviderProtocolError(`identity call answered ${response.status}`);
    }
    if (response.json === undefined) throw new ProviderProtocolError('identity response is not JSON');
    return response.json;
  }

  /** The CRM account behind a fresh token, from the provider's identity calls. */
  async identify(provider: ProviderDefinition, token: TokenResponse): Promise<Account> {
    const entries = await Promise.all(
      Object.entries(provider.identityPaths).map(
        async ([name, path]) => [name, await this.apiGet(provider, token.access_token, path)] as const,
      ),
    );
    try {
      return provider.account(token, Object.fromEntries(entries));
    } catch (err) {
      throw new ProviderProtocolError((err as Error).message);
    }
  }

  /** The cheap authenticated call: does this access token still work? */
  async verifyAccessToken(provider: ProviderDefinition, accessToken: string): Promise<boolean> {
    try {
      await this.apiGet(provider, accessToken, provider.healthCheckPath);
      return true;
    } catch (err) {
      if (err instanceof AccessTokenRejected) return false;
      if (err instanceof ProviderUnavailable) throw err;
      throw new ProviderUnavailable('The CRM gave an unusable answer', undefined, { cause: err });
    }
  }
}

export {
  AccessTokenRejected,
  TokenEndpointRejected,
  type TokenRefusal,
  classifyTokenRefusal,
} from '../../core/domain/crm-errors.ts';
