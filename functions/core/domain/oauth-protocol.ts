/**
 * The OAuth 2.0 client side's pure rules (RFC 6749), in the oauth4webapi
 * shape: build a request, process a response, each validating field by field.
 * Sending them is the CRM adapter's job.
 */
import { ProviderProtocolError, TokenEndpointRejected } from './crm-errors.ts';
import type { ProviderDefinition, TokenResponse } from './providers.ts';

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
