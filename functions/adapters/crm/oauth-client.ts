/**
 * The OAuth 2.0 client side (RFC 6749), each step split into building the
 * request and processing the response, driven by the provider registry.
 */
import { ProviderUnavailable } from '../../core/domain/errors.ts';
import {
  type ProviderHttp,
  ProviderProtocolError,
  type RequestLimits,
  type RetryPolicy,
  noRetry,
} from './crm-http.ts';
import type { Account, ProviderDefinition, TokenResponse } from '../../core/domain/providers.ts';

/**
 * What a refused token request means, by RFC 6749 §5.2 and interface.md's table:
 * - `grant_dead`: 400/401 `invalid_grant`; the person must connect again;
 * - `client_rejected`: `invalid_client` / `unauthorized_client`; the broker's own
 *   credentials are wrong or revoked (an operator mistake, not the customer's grant);
 * - `request_rejected`: `invalid_request` / `unsupported_grant_type` / `invalid_scope`;
 *   the broker sent something the CRM does not take (a broker bug or a CRM change);
 * - `transient`: anything else (a WAF's 403 page, 404, 408, 425, ...): keep and retry later.
 */
export type TokenRefusal = 'grant_dead' | 'client_rejected' | 'request_rejected' | 'transient';

const REFUSALS: Readonly<Record<string, TokenRefusal>> = {
  invalid_grant: 'grant_dead',
  invalid_client: 'client_rejected',
  unauthorized_client: 'client_rejected',
  invalid_request: 'request_rejected',
  unsupported_grant_type: 'request_rejected',
  invalid_scope: 'request_rejected',
};

/** Only a 400 or 401 carrying an RFC 6749 `error` code says what went wrong; nothing else is trusted. */
export function classifyTokenRefusal(status: number, oauthError: string | undefined): TokenRefusal {
  if ((status !== 400 && status !== 401) || oauthError === undefined) return 'transient';
  return Object.hasOwn(REFUSALS, oauthError) ? (REFUSALS[oauthError] as TokenRefusal) : 'transient';
}

/** The token endpoint refused the request (RFC 6749 §5.2); `refusal` says what that means. */
export class TokenEndpointRejected extends Error {
  readonly refusal: TokenRefusal;
  constructor(
    readonly status: number,
    /** The RFC 6749 `error` code when the CRM sent one (`invalid_grant`, ...). */
    readonly oauthError: string | undefined,
  ) {
    super(`token endpoint refused the request (${status}${oauthError ? `, ${oauthError}` : ''})`);
    this.name = 'TokenEndpointRejected';
    this.refusal = classifyTokenRefusal(status, oauthError);
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
const MAX_EXPIRES_IN = 10 * 365 * 86_400;

/**
 * RFC 6749 §5.1 `expires_in`: a positive whole number of seconds, sent as a
 * number or a string of digits. Anything else (`0.5`, `true`, `"0x3c"`, `[60]`)
 * is an unusable answer, never silently coerced.
 */
function parseExpiresIn(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  const seconds =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^\d{1,10}$/.test(value)
        ? Number(value)
        : NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0 || seconds > MAX_EXPIRES_IN) {
    throw new ProviderProtocolError('token response has a malformed expires_in');
  }
  return seconds;
}

/** Validates an RFC 6749 §5.1 token response; anything malformed is a protocol error, not a dead grant. */
export function processTokenResponse(status: number, body: unknown): TokenResponse {
  if (status >= 400 && status < 500) {
    const error = (body as { error?: unknown } | null | undefined)?.error;
    throw new TokenEndpointRejected(
      status,
      typeof error === 'string' && /^[\x20-\x7e]{1,64}$/.test(error) ? error : undefined,
    );
  }
  if (status < 200 || status >= 300) throw new ProviderProtocolError(`token endpoint answered ${status}`);
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
  const expiresIn = parseExpiresIn(b.expires_in);
  const optionalString = (v: unknown) =>
    typeof v === 'string' && v.length <= 256 ? v : typeof v === 'number' ? String(v) : undefined;
  const out: TokenResponse = { access_token: b.access_token as string, token_type: 'Bearer' };
  if (expiresIn !== undefined) out.expires_in = expiresIn;
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
