/**
 * The OAuth 2.0 client side (RFC 6749), each step split into building the
 * request and processing the response, driven by the provider registry.
 */
import { ProviderUnavailable } from './errors.ts';
import { type ProviderHttp, ProviderProtocolError, type RetryPolicy, noRetry } from './provider-http.ts';
import type { Account, ProviderDefinition, TokenResponse } from './providers.ts';

/** The token endpoint refused the request (RFC 6749 §5.2): for a refresh, the grant is dead. */
export class TokenEndpointRejected extends Error {
  constructor(
    readonly status: number,
    /** The RFC 6749 `error` code when the CRM sent one (`invalid_grant`, ...). */
    readonly oauthError: string | undefined,
  ) {
    super(`token endpoint refused the request (${status}${oauthError ? `, ${oauthError}` : ''})`);
    this.name = 'TokenEndpointRejected';
  }
}

/** The CRM refused an access token on an API call (401): the grant is dead. */
export class AccessTokenRejected extends Error {
  constructor(readonly status: number) {
    super(`CRM refused the access token (${status})`);
    this.name = 'AccessTokenRejected';
  }
}

export interface AuthorizationRequest {
  clientId: string;
  redirectUri: string;
  state: string;
  /** RFC 7636 S256 challenge, only for providers with `pkce`. */
  codeChallenge?: string;
}

/** RFC 6749 §4.1.1 authorization request URL. */
export function buildAuthorizationUrl(provider: ProviderDefinition, request: AuthorizationRequest): string {
  const url = new URL(provider.authorizeUrl);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', request.clientId);
  url.searchParams.set('redirect_uri', request.redirectUri);
  url.searchParams.set('scope', provider.scopes.join(' '));
  url.searchParams.set('state', request.state);
  if (request.codeChallenge) {
    url.searchParams.set('code_challenge', request.codeChallenge);
    url.searchParams.set('code_challenge_method', 'S256');
  }
  return url.toString();
}

const MAX_TOKEN_LENGTH = 8192;

/** Validates an RFC 6749 §5.1 token response; anything malformed is a protocol error, not a dead grant. */
export function processTokenResponse(status: number, body: unknown): TokenResponse {
  if (status === 400 || status === 401) {
    const error = (body as { error?: unknown } | undefined)?.error;
    throw new TokenEndpointRejected(status, typeof error === 'string' ? error.slice(0, 64) : undefined);
  }
  if (status < 200 || status >= 300) {
    if (status >= 400 && status < 500) throw new TokenEndpointRejected(status, undefined);
    throw new ProviderProtocolError(`token endpoint answered ${status}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ProviderProtocolError('token response is not a JSON object');
  }
  const b = body as Record<string, unknown>;
  const token = (v: unknown) => typeof v === 'string' && v.length > 0 && v.length <= MAX_TOKEN_LENGTH;
  if (!token(b.access_token)) throw new ProviderProtocolError('token response lacks access_token');
  if (b.refresh_token !== undefined && b.refresh_token !== null && !token(b.refresh_token)) {
    throw new ProviderProtocolError('token response has a malformed refresh_token');
  }
  if (
    b.token_type !== undefined &&
    (typeof b.token_type !== 'string' || b.token_type.toLowerCase() !== 'bearer')
  ) {
    throw new ProviderProtocolError('token response has an unsupported token_type');
  }
  let expiresIn: number | undefined;
  if (b.expires_in !== undefined && b.expires_in !== null) {
    expiresIn = Number(b.expires_in);
    if (!Number.isFinite(expiresIn) || expiresIn <= 0 || expiresIn > 10 * 365 * 86_400) {
      throw new ProviderProtocolError('token response has a malformed expires_in');
    }
  }
  const optionalString = (v: unknown) =>
    typeof v === 'string' && v.length <= 256 ? v : typeof v === 'number' ? String(v) : undefined;
  const out: TokenResponse = { access_token: b.access_token as string, token_type: 'Bearer' };
  if (expiresIn !== undefined) out.expires_in = Math.floor(expiresIn);
  if (token(b.refresh_token)) out.refresh_token = b.refresh_token as string;
  for (const field of ['scope', 'subdomain', 'organization_id', 'user_id'] as const) {
    const value = optionalString(b[field]);
    if (value !== undefined) out[field] = value;
  }
  return out;
}

export interface ClientSecrets {
  clientId(provider: ProviderDefinition): string;
  clientSecret(provider: ProviderDefinition): Promise<string>;
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
    deadline?: number,
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
      deadline,
    );
    return processTokenResponse(response.status, response.json);
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

  /** RFC 6749 §6. */
  refresh(
    provider: ProviderDefinition,
    refreshToken: string,
    policy: RetryPolicy,
    deadline?: number,
  ): Promise<TokenResponse> {
    return this.tokenRequest(
      provider,
      { grant_type: 'refresh_token', refresh_token: refreshToken },
      policy,
      deadline,
    );
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
