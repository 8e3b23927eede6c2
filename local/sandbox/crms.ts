/**
 * The sandbox CRMs as data: one entry per CRM describing its paths, client,
 * scopes, PKCE policy, how it answers the redirect URI, its token response
 * shape, refresh behaviour and identity API (shared/providers.md). The
 * handlers in `oauth.ts` read these entries and never branch on a CRM's name.
 *
 * The sandbox deliberately shares no code with the broker's provider registry:
 * it plays the other side of the protocol, so a mistake in one must not be
 * hidden by the same mistake in the other.
 */

import type { SandboxRateLimitStyle } from './rate-limit.ts';

export const sandboxProviders = ['copper', 'capsule', 'close'] as const;
export type SandboxProvider = (typeof sandboxProviders)[number];

export const isSandboxProvider = (value: unknown): value is SandboxProvider =>
  typeof value === 'string' && (sandboxProviders as readonly string[]).includes(value);

/** Prefix of the broker's environment variables for a CRM (`CLOSE_TOKEN_URL`, ...). */
export const envPrefix = (id: SandboxProvider): string => id.toUpperCase();

export interface Organization {
  readonly id: string;
  readonly name: string;
}

/** What an identity/API handler sees about the grant behind the bearer token. */
export interface GrantView {
  readonly provider: SandboxProvider;
  readonly scope: readonly string[];
  /** The organization picked on the consent page (CRMs with `organizations`). */
  readonly organizationId?: string;
}

export interface CrmSpec {
  readonly id: SandboxProvider;
  readonly displayName: string;
  /** The one OAuth client registered at this sandbox CRM (the broker). */
  readonly client: { readonly id: string; readonly secret: string; readonly appName: string };
  /** Paths under `{base}/sandbox`, mirroring the real hosts and paths (host folded into the first segment). */
  readonly paths: {
    readonly authorize: string;
    readonly token: string;
    /** API base; identity calls are relative to it. */
    readonly apiBase: string;
  };
  /** Allowed scopes (space separated in requests), each with a line for the consent page. */
  readonly scopes: Readonly<Record<string, string>>;
  /** The scope without which no refresh token is issued (Close's `offline_access`). */
  readonly refreshScope?: string;
  /** PKCE (RFC 7636): `required` rejects an authorization request without an S256 challenge. */
  readonly pkce: 'optional' | 'required';
  /** How the answer goes back to the redirect URI: a 302 with a query, or an auto-submitted POST form. */
  readonly callback: 'redirect' | 'form_post';
  /** Token (and revoke) request bodies accepted. */
  readonly bodyEncodings: readonly ('form' | 'json')[];
  /** `token_type` exactly as the CRM spells it. */
  readonly tokenType: string;
  /** Access token lifetime in seconds (overridable by `tokenLifetimeSeconds`); null: never expires. */
  readonly accessTokenLifetime: number | null;
  /** Refresh: none (no refresh grant), reuse (no new refresh token; the old stays valid), rotate (new one each time; reuse of an old one revokes the grant). */
  readonly refresh: 'none' | 'reuse' | 'rotate';
  /**
   * RFC 7009 revocation endpoint (absent where the CRM has none), and whether it
   * demands the client credentials or only checks them when sent.
   */
  readonly revoke?: { readonly path: string; readonly clientAuth: 'required' | 'optional' };
  /** The person on the consent page. */
  readonly user: { readonly name: string; readonly email: string };
  /** Organizations to pick from on the consent page: a grant is per organization. */
  readonly organizations?: readonly Organization[];
  /** CRM-specific fields of the token response (both for the code and the refresh grant). */
  readonly tokenExtras: (grant: GrantView) => Record<string, string>;
  /** GET routes relative to `apiBase`, answered as JSON for a valid bearer token. */
  readonly api: Readonly<Record<string, (grant: GrantView) => unknown>>;
  /** The 401 body of the API for a missing, invalid, expired or revoked token. */
  readonly unauthorizedBody: unknown;
  /**
   * How the API limits requests per account and reports it (rate-limit.ts), with the sandbox's
   * default: the real CRM's window, far more requests than the real CRM allows.
   */
  readonly rateLimit: {
    readonly style: SandboxRateLimitStyle;
    readonly default: { readonly requests: number; readonly windowSeconds: number };
  };
}

const APP_NAME = 'CRM OAuth Broker (local)';

const copper: CrmSpec = {
  id: 'copper',
  displayName: 'Copper',
  client: { id: 'sandbox-copper-client', secret: 'sandbox-copper-secret', appName: APP_NAME },
  paths: {
    authorize: '/copper/oauth/authorize',
    token: '/copper/oauth/token',
    apiBase: '/copper/developer_api/v1',
  },
  scopes: { 'developer/v1/all': 'Read and write all of your Copper data' },
  // Undocumented at Copper; a challenge, when sent, is honoured rather than breaking the flow.
  pkce: 'optional',
  callback: 'form_post',
  bodyEncodings: ['form'],
  tokenType: 'Bearer',
  accessTokenLifetime: null,
  refresh: 'none',
  user: { name: 'Sam Sandbox', email: 'sam@copper-sandbox.example' },
  tokenExtras: () => ({}),
  api: {
    '/account': () => ({
      id: 424242,
      name: 'Sandbox Copper Co',
      primary_timezone: 'Etc/UTC',
      custom_app_url: null,
    }),
    '/users/me': () => ({ id: 101, name: 'Sam Sandbox', email: 'sam@copper-sandbox.example' }),
  },
  unauthorizedBody: { success: false, status: 401, message: 'Invalid credentials' },
  // Real: 180 per minute, rolling, 429 with no headers.
  rateLimit: { style: 'rolling', default: { requests: 18_000, windowSeconds: 60 } },
};

const CAPSULE_SITE = {
  name: 'Sandbox Capsule Ltd',
  subdomain: 'sandbox-capsule',
  url: 'https://sandbox-capsule.capsulecrm.com',
};

const capsule: CrmSpec = {
  id: 'capsule',
  displayName: 'Capsule CRM',
  client: { id: 'sandbox-capsule-client', secret: 'sandbox-capsule-secret', appName: APP_NAME },
  paths: {
    authorize: '/capsule/oauth/authorise',
    token: '/capsule/oauth/token',
    apiBase: '/capsule/api/v2',
  },
  scopes: { read: 'Read your Capsule data', write: 'Create, change and delete your Capsule data' },
  pkce: 'optional',
  callback: 'redirect',
  bodyEncodings: ['form', 'json'],
  tokenType: 'bearer',
  accessTokenLifetime: 604_799,
  refresh: 'reuse',
  revoke: { path: '/capsule/oauth/token/revoke', clientAuth: 'optional' },
  user: { name: 'Sam Sandbox', email: 'sam@capsule-sandbox.example' },
  tokenExtras: () => ({ subdomain: CAPSULE_SITE.subdomain }),
  api: {
    '/users/current': () => ({
      user: {
        id: 2001,
        username: 'sam',
        name: 'Sam Sandbox',
        pictureURL: null,
        timezone: 'Europe/London',
        currency: 'GBP',
        party: {
          id: 3001,
          type: 'person',
          firstName: 'Sam',
          lastName: 'Sandbox',
          emailAddresses: [{ id: 4001, type: 'Work', address: 'sam@capsule-sandbox.example' }],
        },
      },
    }),
    '/site': () => ({ site: CAPSULE_SITE }),
  },
  unauthorizedBody: { message: 'Invalid or expired access token', errors: [] },
  // Real: 4,000 per hour per user, X-RateLimit-* with the reset in epoch seconds.
  rateLimit: { style: 'x-ratelimit', default: { requests: 400_000, windowSeconds: 3600 } },
};

const CLOSE_USER_ID = 'user_sandboxSam0000000000000000000000000000';
const CLOSE_ORGS: readonly Organization[] = [
  { id: 'orga_sandboxAcme000000000000000000000000000', name: 'Acme Sandbox Inc.' },
  { id: 'orga_sandboxGlobex00000000000000000000000000', name: 'Globex Sandbox Ltd' },
];

const close: CrmSpec = {
  id: 'close',
  displayName: 'Close',
  client: { id: 'sandbox-close-client', secret: 'sandbox-close-secret', appName: APP_NAME },
  paths: {
    // Two hosts (app. and api.), folded into the first path segment; trailing slashes significant.
    authorize: '/close-app/oauth2/authorize/',
    token: '/close-api/oauth2/token/',
    apiBase: '/close-api/api/v1',
  },
  scopes: {
    'all.full_access': 'Full access to the organization’s Close data',
    offline_access: 'Stay connected when you are not using the app',
  },
  refreshScope: 'offline_access',
  pkce: 'required',
  callback: 'redirect',
  bodyEncodings: ['form'],
  tokenType: 'Bearer',
  accessTokenLifetime: 3600,
  refresh: 'rotate',
  revoke: { path: '/close-api/oauth2/revoke/', clientAuth: 'required' },
  user: { name: 'Sam Sandbox', email: 'sam@close-sandbox.example' },
  organizations: CLOSE_ORGS,
  tokenExtras: (grant) => ({ organization_id: grant.organizationId ?? '', user_id: CLOSE_USER_ID }),
  api: {
    '/me/': () => ({
      id: CLOSE_USER_ID,
      email: 'sam@close-sandbox.example',
      first_name: 'Sam',
      last_name: 'Sandbox',
      organizations: CLOSE_ORGS.map((o) => ({ id: o.id, name: o.name })),
    }),
  },
  unauthorizedBody: { error: 'The bearer token is invalid, expired or revoked.' },
  // Real: requests per second per endpoint group, `RateLimit: limit, remaining, reset` and `Retry-After`.
  rateLimit: { style: 'ratelimit-fields', default: { requests: 1_000, windowSeconds: 1 } },
};

export const crms: Readonly<Record<SandboxProvider, CrmSpec>> = { copper, capsule, close };
