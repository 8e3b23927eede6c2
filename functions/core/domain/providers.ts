/**
 * The provider registry: every CRM quirk from shared/providers.md as data, so
 * handlers never branch on a provider's name.
 */
import { type RateLimitPolicy, parseRateLimitSetting } from './rate-limits.ts';

export const providerIds = ['copper', 'capsule', 'close'] as const;
export type ProviderId = (typeof providerIds)[number];

export const isProviderId = (value: unknown): value is ProviderId =>
  typeof value === 'string' && (providerIds as readonly string[]).includes(value);

/** The CRM account a connection belongs to (shown to callers; never secret). */
export interface Account {
  id: string;
  name: string | null;
  userEmail: string | null;
}

/** RFC 6749 §5.1 token response fields the broker uses, plus the CRMs' extras. */
export interface TokenResponse {
  access_token: string;
  token_type?: string;
  expires_in?: number;
  refresh_token?: string;
  scope?: string;
  /** Capsule: the account's subdomain. */
  subdomain?: string;
  /** Close: the organization the person picked on the consent page. */
  organization_id?: string;
  /** Close: the user who consented. */
  user_id?: string;
}

export interface ProviderDefinition {
  readonly id: ProviderId;
  readonly displayName: string;
  readonly authorizeUrl: string;
  readonly tokenUrl: string;
  /** RFC 7009 revocation endpoint; absent where the CRM has none (Copper). */
  readonly revokeUrl?: string;
  readonly apiBaseUrl: string;
  readonly scopes: readonly string[];
  /** Send PKCE S256 (RFC 7636). Only where the CRM is known to take it. */
  readonly pkce: boolean;
  /** How the token endpoint wants its body; all three take `client_id` + `client_secret` in it. */
  readonly tokenRequestEncoding: 'form' | 'json';
  /** Whether tokens expire and can be refreshed (Copper's do neither). */
  readonly refreshable: boolean;
  /**
   * `rotates` or `unknown`: a refresh whose answer is lost must not be retried, since the retry
   * would present a refresh token the CRM may have rotated away (and revoke the grant for it).
   * Only `never` (proven not to rotate) allows that retry.
   */
  readonly refreshTokenRotation: 'rotates' | 'unknown' | 'never';
  /** Which token the revoke endpoint is given. */
  readonly revokeToken: 'refresh_token' | 'access_token';
  /** Whether the revoke request carries the client credentials (Close) or just the token (Capsule). */
  readonly revokeWithClientCredentials: boolean;
  /** RFC 9207 issuer identifier the CRM sends as `iss` on the callback, if it ever does (`<P>_ISSUER`). */
  readonly issuer?: string;
  /** Headers every API call needs, besides `Authorization`. */
  readonly apiHeaders: Readonly<Record<string, string>>;
  /** Identity calls, relative to `apiBaseUrl`, made once per connect with the new access token. */
  readonly identityPaths: Readonly<Record<string, string>>;
  /**
   * The cheap authenticated call proving a token still works (for tokens that
   * never expire: a 401 there means the grant is dead).
   */
  readonly healthCheckPath: string;
  /** Maps the token response and the identity responses to the account; throws on a malformed answer. */
  readonly account: (token: TokenResponse, identity: Record<string, unknown>) => Account;
  /** The API's rate limit and how answers report it; `<P>_RATE_LIMIT=<requests>/<seconds>` overrides the budget. */
  readonly rateLimit: RateLimitPolicy;
}

type ProviderData = Omit<
  ProviderDefinition,
  'authorizeUrl' | 'tokenUrl' | 'revokeUrl' | 'apiBaseUrl' | 'scopes'
> & {
  readonly defaults: {
    authorizeUrl: string;
    tokenUrl: string;
    revokeUrl?: string;
    apiBaseUrl: string;
    scopes: readonly string[];
  };
};

const str = (value: unknown): string | null =>
  typeof value === 'string' && value.length > 0
    ? value
    : typeof value === 'number' && Number.isFinite(value)
      ? String(value)
      : null;
const obj = (value: unknown): Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};

function required(value: string | null, what: string): string {
  if (value === null) throw new Error(`identity response lacks ${what}`);
  return value;
}

export const providerData: Readonly<Record<ProviderId, ProviderData>> = {
  copper: {
    id: 'copper',
    displayName: 'Copper',
    defaults: {
      authorizeUrl: 'https://app.copper.com/oauth/authorize',
      tokenUrl: 'https://app.copper.com/oauth/token',
      apiBaseUrl: 'https://api.copper.com/developer_api/v1',
      scopes: ['developer/v1/all'],
    },
    // PKCE is undocumented at Copper: not sent, so an unknown parameter cannot break the flow.
    pkce: false,
    tokenRequestEncoding: 'form',
    refreshable: false,
    // No refresh tokens at all; nothing proven either way.
    refreshTokenRotation: 'unknown',
    revokeToken: 'access_token',
    revokeWithClientCredentials: false,
    apiHeaders: { 'X-PW-Application': 'developer_api', 'Content-Type': 'application/json' },
    identityPaths: { account: '/account', me: '/users/me' },
    healthCheckPath: '/account',
    // 180 per minute, rolling; a 429 with no documented headers, so this budget is all the broker knows.
    rateLimit: { requests: 180, windowSeconds: 60, headers: 'none', scope: 'account' },
    account: (_token, identity) => {
      const account = obj(identity.account);
      const me = obj(identity.me);
      return {
        id: required(str(account.id), 'account.id'),
        name: str(account.name),
        userEmail: str(me.email),
      };
    },
  },
  capsule: {
    id: 'capsule',
    displayName: 'Capsule CRM',
    defaults: {
      authorizeUrl: 'https://api.capsulecrm.com/oauth/authorise',
      tokenUrl: 'https://api.capsulecrm.com/oauth/token',
      revokeUrl: 'https://api.capsulecrm.com/oauth/token/revoke',
      apiBaseUrl: 'https://api.capsulecrm.com/api/v2',
      scopes: ['read', 'write'],
    },
    pkce: false,
    tokenRequestEncoding: 'form',
    refreshable: true,
    // "Always store the most recent version" (providers.md): may rotate.
    refreshTokenRotation: 'unknown',
    revokeToken: 'refresh_token',
    revokeWithClientCredentials: false,
    apiHeaders: { Accept: 'application/json' },
    identityPaths: { user: '/users/current', site: '/site' },
    healthCheckPath: '/users/current',
    // 4,000 per hour per user, reported in X-RateLimit-Limit/Remaining/Reset (epoch seconds).
    rateLimit: { requests: 4000, windowSeconds: 3600, headers: 'x-ratelimit-epoch', scope: 'user' },
    account: (token, identity) => {
      const site = obj(obj(identity.site).site);
      const user = obj(obj(identity.user).user);
      const party = obj(user.party);
      const emails = Array.isArray(party.emailAddresses) ? party.emailAddresses : [];
      return {
        // The token response's `subdomain` names the Capsule account; /site agrees with it.
        id: required(str(token.subdomain) ?? str(site.subdomain), 'subdomain'),
        name: str(site.name),
        userEmail: str(obj(emails[0]).address) ?? str(user.email),
      };
    },
  },
  close: {
    id: 'close',
    displayName: 'Close',
    defaults: {
      // Two hosts, trailing slashes significant.
      authorizeUrl: 'https://app.close.com/oauth2/authorize/',
      tokenUrl: 'https://api.close.com/oauth2/token/',
      revokeUrl: 'https://api.close.com/oauth2/revoke/',
      apiBaseUrl: 'https://api.close.com/api/v1',
      scopes: ['all.full_access', 'offline_access'],
    },
    pkce: true,
    tokenRequestEncoding: 'form',
    refreshable: true,
    // Each refresh returns a new refresh token and revokes the old one.
    refreshTokenRotation: 'rotates',
    revokeToken: 'refresh_token',
    revokeWithClientCredentials: true,
    apiHeaders: { Accept: 'application/json' },
    identityPaths: { me: '/me/' },
    healthCheckPath: '/me/',
    // Per endpoint group and key, in requests per second, reported as `RateLimit: limit=, remaining=, reset=`:
    // a conservative 10 per second until an answer says the limit (one budget for all groups: the lowest).
    rateLimit: { requests: 10, windowSeconds: 1, headers: 'ratelimit-fields', scope: 'account' },
    account: (token, identity) => {
      const me = obj(identity.me);
      // A Close connection is per organization: the one picked on the consent page.
      const orgId = required(str(token.organization_id), 'organization_id');
      const orgs = Array.isArray(me.organizations) ? me.organizations.map(obj) : [];
      const org = orgs.find((o) => str(o.id) === orgId);
      return { id: orgId, name: org ? str(org.name) : null, userEmail: str(me.email) };
    },
  },
};

/** Environment variable prefix of a provider's settings (`CLOSE_TOKEN_URL`, ...). */
export const envPrefix = (id: ProviderId): string => id.toUpperCase();

function checkUrl(value: string, what: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${what} is not a URL`);
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new Error(`${what} must be https (http only on loopback)`);
  }
  return value;
}

/** The registry with every endpoint and scope overridable through `<P>_AUTHORIZE_URL` etc. */
export function resolveProviders(
  env: Record<string, string | undefined>,
): Record<ProviderId, ProviderDefinition> {
  const resolved = {} as Record<ProviderId, ProviderDefinition>;
  for (const id of providerIds) {
    const { defaults, ...data } = providerData[id];
    const p = envPrefix(id);
    const revokeUrl = env[`${p}_REVOKE_URL`] ?? defaults.revokeUrl;
    const issuer = env[`${p}_ISSUER`];
    const scopes = env[`${p}_SCOPES`]?.split(/[\s,]+/).filter(Boolean);
    const rateLimit = env[`${p}_RATE_LIMIT`];
    resolved[id] = {
      ...data,
      authorizeUrl: checkUrl(env[`${p}_AUTHORIZE_URL`] ?? defaults.authorizeUrl, `${p}_AUTHORIZE_URL`),
      tokenUrl: checkUrl(env[`${p}_TOKEN_URL`] ?? defaults.tokenUrl, `${p}_TOKEN_URL`),
      ...(revokeUrl ? { revokeUrl: checkUrl(revokeUrl, `${p}_REVOKE_URL`) } : {}),
      apiBaseUrl: checkUrl(env[`${p}_API_BASE_URL`] ?? defaults.apiBaseUrl, `${p}_API_BASE_URL`).replace(
        /\/$/,
        '',
      ),
      scopes: scopes && scopes.length > 0 ? scopes : defaults.scopes,
      rateLimit: rateLimit
        ? { ...data.rateLimit, ...parseRateLimitSetting(rateLimit, `${p}_RATE_LIMIT`) }
        : data.rateLimit,
      ...(issuer ? { issuer } : {}),
    };
  }
  return resolved;
}
