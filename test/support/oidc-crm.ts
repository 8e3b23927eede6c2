/**
 * A Close-like CRM played by a certified OAuth 2.0 server (oidc-provider@9),
 * the adversary for refresh and code-injection tests.
 *
 * - one confidential client (`client_secret_post`), `authorization_code` +
 *   `refresh_token`, response type `code`, PKCE S256 required;
 * - rotating refresh tokens: every refresh consumes the old refresh token, and
 *   presenting a consumed one revokes the whole grant (oidc-provider's own
 *   rule, counted in `calls.reuseDetected`);
 * - no human: every authorization request is approved for one fixed account
 *   with a fresh grant, so a browser only follows redirects
 *   (authorize -> 303 interaction -> 303 resume -> 303 redirect_uri?code&state);
 * - Close's URL layout and extras in front of it: `/oauth2/authorize/`,
 *   `/oauth2/token/` (adds `organization_id` and `user_id` to a successful
 *   answer), `/oauth2/revoke/`, `GET /api/v1/me/`; no RFC 9207 `iss` on the
 *   callback (Close sends none) unless `issuerInResponse` is set;
 * - fault injection and latency on the token endpoint.
 *
 * Token endpoint requests are handled one at a time, so two requests carrying
 * the same refresh token are always seen as a reuse (oidc-provider reads and
 * then consumes a refresh token across several awaits; concurrent requests
 * could otherwise both pass).
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
// @ts-expect-error oidc-provider@9 ships no type declarations; the surface used here is typed below.
import ProviderModule from 'oidc-provider';

export interface OidcCrm {
  /** http://127.0.0.1:PORT */
  issuer: string;
  /** Env for the broker's registry: CLOSE_CLIENT_ID, CLOSE_CLIENT_SECRET, CLOSE_AUTHORIZE_URL, CLOSE_TOKEN_URL, CLOSE_REVOKE_URL, CLOSE_API_BASE_URL, CLOSE_SCOPES */
  env: Record<string, string>;
  /** Counts of token endpoint calls by grant_type, of refresh-token reuse detections, of /me/ calls, of revoke calls. */
  calls: {
    authorization_code: number;
    refresh_token: number;
    reuseDetected: number;
    identity: number;
    revoke: number;
  };
  /** Make the next token endpoint answers fail: an HTTP status (+ optional body/headers), 'hang', or 'destroy'. */
  failNextToken(reply: FailReply, times?: number): void;
  /** Latency added before each token endpoint answer (ms). */
  setTokenLatency(ms: number): void;
  /** Replaces the client's registered redirect URIs (e.g. once the broker's port is known). */
  setRedirectUris(uris: string[]): Promise<void>;
  /**
   * Changes the client secret the CRM accepts (an operator rotated it at the CRM, or the broker is
   * configured with a wrong one): the broker's requests then get 401 `invalid_client`.
   */
  setClientSecret(secret: string): Promise<void>;
  /** Revoke every grant (the user removed the app). */
  revokeAll(): Promise<void>;
  /** True if `accessToken` is currently valid at the server (RFC 7662 introspection). */
  isValid(accessToken: string): Promise<boolean>;
  /** Clears the counters and queued failures (not the latency). */
  reset(): void;
  close(): Promise<void>;
}

export type FailReply =
  { status: number; body?: string; headers?: Record<string, string> } | 'hang' | 'destroy';

export interface OidcCrmOptions {
  redirectUris: string[];
  /** Access token lifetime, default 3600. */
  accessTokenTtlSeconds?: number;
  /** The organization put in token responses and /me/, default `orga_oidc_crm`. */
  organizationId?: string;
  /** Send RFC 9207 `iss` on the authorization response (Close does not; default false). */
  issuerInResponse?: boolean;
}

// ---------------------------------------------------------------------------------------------
// The small part of oidc-provider's API used here.

interface OidcCtx {
  path: string;
  status: number;
  body: unknown;
  oidc?: { route?: string };
  response: { get(name: string): string };
  set(name: string, value: string): void;
}
interface OidcAccessToken {
  accountId: string;
  clientId: string;
  grantId?: string;
  isExpired: boolean;
  scope?: string;
}
interface OidcGrant {
  accountId: string;
  clientId: string;
  isExpired: boolean;
  addOIDCScope(scope: string): void;
  save(): Promise<string>;
  destroy(): Promise<void>;
}
interface TokenModel {
  revokeByGrantId(grantId: string): Promise<void>;
}
interface OidcProvider {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  use(middleware: (ctx: OidcCtx, next: () => Promise<void>) => Promise<void>): void;
  on(event: string, listener: (...args: unknown[]) => void): void;
  interactionDetails(
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<{ uid: string; params: Record<string, unknown> }>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: unknown,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  AccessToken: TokenModel & { find(value: string): Promise<OidcAccessToken | undefined> };
  RefreshToken: TokenModel;
  AuthorizationCode: TokenModel;
  Grant: {
    new (init: { accountId: string; clientId: string }): OidcGrant;
    find(id: string): Promise<OidcGrant | undefined>;
  };
}
const Provider = ProviderModule as new (issuer: string, configuration: unknown) => OidcProvider;

// ---------------------------------------------------------------------------------------------
// Storage: oidc-provider's built-in memory adapter is an LRU of 1,000 entries (a long race test
// could see grants evicted); this one keeps everything, per server, for the test's lifetime.

type Payload = Record<string, unknown> & { grantId?: string; uid?: string; userCode?: string };

class Store {
  readonly items = new Map<string, { payload: Payload; expiresAt: number }>();
  readonly byGrant = new Map<string, Set<string>>();
  readonly byUid = new Map<string, string>();
  readonly byUserCode = new Map<string, string>();

  get(key: string): Payload | undefined {
    const item = this.items.get(key);
    if (!item) return undefined;
    if (item.expiresAt <= Date.now()) {
      this.delete(key);
      return undefined;
    }
    return item.payload;
  }

  delete(key: string) {
    const item = this.items.get(key);
    this.items.delete(key);
    const grantId = item?.payload.grantId;
    if (grantId) this.byGrant.get(grantId)?.delete(key);
  }
}

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

function adapterFactory(store: Store) {
  return class Adapter {
    constructor(readonly model: string) {}

    private key(id: string) {
      return `${this.model}:${id}`;
    }

    async upsert(id: string, payload: Payload, expiresIn?: number) {
      const key = this.key(id);
      // Clock tolerance on top, as oidc-provider's own adapter keeps it.
      const expiresAt = typeof expiresIn === 'number' ? Date.now() + (expiresIn + 15) * 1000 : Infinity;
      store.delete(key);
      store.items.set(key, { payload: structuredClone(payload), expiresAt });
      if (GRANTABLE.has(this.model) && payload.grantId) {
        const members = store.byGrant.get(payload.grantId) ?? new Set<string>();
        members.add(key);
        store.byGrant.set(payload.grantId, members);
      }
      if (payload.uid && this.model === 'Session') store.byUid.set(payload.uid, id);
      if (payload.userCode) store.byUserCode.set(payload.userCode, id);
    }

    async find(id: string) {
      const payload = store.get(this.key(id));
      return payload ? structuredClone(payload) : undefined;
    }

    async findByUid(uid: string) {
      const id = store.byUid.get(uid);
      return id ? this.find(id) : undefined;
    }

    async findByUserCode(userCode: string) {
      const id = store.byUserCode.get(userCode);
      return id ? this.find(id) : undefined;
    }

    async consume(id: string) {
      const payload = store.get(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }

    async destroy(id: string) {
      store.delete(this.key(id));
    }

    async revokeByGrantId(grantId: string) {
      for (const key of store.byGrant.get(grantId) ?? []) store.items.delete(key);
      store.byGrant.delete(grantId);
    }
  };
}

// ---------------------------------------------------------------------------------------------

const ACCOUNT = {
  id: 'user_oidc_crm',
  email: 'pat@oidc-crm.test',
  first_name: 'Pat',
  last_name: 'Tester',
};

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(JSON.stringify(body));
}

export async function startOidcCrm(opts: OidcCrmOptions): Promise<OidcCrm> {
  const organizationId = opts.organizationId ?? 'orga_oidc_crm';
  const clientId = `oidc_crm_client_${randomBytes(6).toString('hex')}`;
  const clientSecret = randomBytes(24).toString('base64url');
  let acceptedSecret = clientSecret;
  let registeredUris = opts.redirectUris;
  const store = new Store();
  const grants = new Set<string>();
  const calls = { authorization_code: 0, refresh_token: 0, reuseDetected: 0, identity: 0, revoke: 0 };
  let failures: FailReply[] = [];
  let latencyMs = 0;
  // Token endpoint requests run one at a time (see the file comment).
  let tokenQueue: Promise<void> = Promise.resolve();

  // Set once the provider exists (its issuer needs the port, so after listening).
  const ready: { provider?: OidcProvider; app?: (req: IncomingMessage, res: ServerResponse) => void } = {};

  const clientMetadata = (redirectUris: string[]) => ({
    client_id: clientId,
    client_secret: acceptedSecret,
    client_name: 'crm-oauth-broker test',
    application_type: 'web',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: redirectUris,
    id_token_signed_response_alg: 'ES256', // the only key (never used: no ID tokens)
  });
  const setRedirectUris = async (uris: string[]) => {
    registeredUris = uris;
    // A client kept in the adapter (not the static `clients` list) is re-read on every request.
    store.items.set(`Client:${clientId}`, { payload: clientMetadata(uris), expiresAt: Infinity });
  };
  await setRedirectUris(opts.redirectUris);

  const forward = (req: IncomingMessage, res: ServerResponse, path?: string) => {
    if (!ready.app) throw new Error('provider not ready');
    if (path !== undefined) {
      const query = (req.url ?? '').indexOf('?');
      req.url = path + (query >= 0 ? (req.url ?? '').slice(query) : '');
    }
    ready.app(req, res);
  };

  /** Hands a request whose body was already read to the provider, as a fresh stream of that body. */
  const forwardWithBody = (req: IncomingMessage, res: ServerResponse, body: Buffer, path: string) =>
    new Promise<void>((resolve) => {
      res.once('close', () => resolve());
      const query = (req.url ?? '').indexOf('?');
      const replay = Object.assign(Readable.from([body], { objectMode: false }), {
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        method: req.method,
        url: path + (query >= 0 ? (req.url ?? '').slice(query) : ''),
        httpVersion: req.httpVersion,
        httpVersionMajor: req.httpVersionMajor,
        httpVersionMinor: req.httpVersionMinor,
        socket: req.socket,
        connection: req.socket,
      });
      if (!ready.app) throw new Error('provider not ready');
      ready.app(replay as unknown as IncomingMessage, res);
    });

  /** The access token behind a Bearer header, if it is live and its grant still exists. */
  const liveAccessToken = async (authorization: string | undefined) => {
    const m = /^Bearer ([\w.~+/-]+=*)$/i.exec(authorization ?? '');
    const provider = ready.provider;
    if (!m || !provider) return undefined;
    const token = await provider.AccessToken.find(m[1] as string);
    if (!token || token.isExpired || token.clientId !== clientId || !token.grantId) return undefined;
    const grant = await provider.Grant.find(token.grantId);
    if (!grant || grant.isExpired || grant.accountId !== token.accountId) return undefined;
    return token;
  };

  const handleToken = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req);
    const grantType = new URLSearchParams(body.toString('utf8')).get('grant_type');
    if (grantType === 'authorization_code' || grantType === 'refresh_token') calls[grantType] += 1;
    if (latencyMs > 0) await sleep(latencyMs);
    const failure = failures.shift();
    if (failure === 'hang') return; // never answered; close() or the client's timeout ends it
    if (failure === 'destroy') {
      req.socket.destroy();
      return;
    }
    if (failure) {
      res.writeHead(failure.status, failure.headers ?? {});
      res.end(failure.body ?? '');
      return;
    }
    const turn = tokenQueue.then(() => forwardWithBody(req, res, body, '/token'));
    tokenQueue = turn.catch(() => undefined);
    await turn;
  };

  const handleInteraction = async (req: IncomingMessage, res: ServerResponse) => {
    const provider = ready.provider;
    if (!provider) throw new Error('provider not ready');
    const details = await provider.interactionDetails(req, res);
    const requested = typeof details.params.scope === 'string' ? details.params.scope : '';
    const grant = new provider.Grant({ accountId: ACCOUNT.id, clientId: String(details.params.client_id) });
    grant.addOIDCScope(requested);
    const grantId = await grant.save();
    grants.add(grantId);
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: ACCOUNT.id }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  };

  const handleMe = async (req: IncomingMessage, res: ServerResponse) => {
    calls.identity += 1;
    const token = await liveAccessToken(req.headers.authorization);
    if (!token) {
      json(res, 401, { error: 'Unauthorized' }, { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
      return;
    }
    json(res, 200, {
      ...ACCOUNT,
      organizations: [{ id: organizationId, name: 'OIDC CRM Org' }],
    });
  };

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const method = req.method ?? 'GET';
    const route = async () => {
      if (path === '/oauth2/authorize/' && method === 'GET') {
        // Close always shows its consent page. oidc-provider drops `offline_access` from a request
        // without `prompt=consent` (OIDC Core 11), so the consent prompt is made explicit here.
        const url = new URL(req.url ?? '/', issuer);
        if (!url.searchParams.has('prompt')) url.searchParams.set('prompt', 'consent');
        req.url = url.pathname + url.search;
        return forward(req, res, '/auth');
      }
      if (path === '/oauth2/token/' && method === 'POST') return handleToken(req, res);
      if (path === '/oauth2/revoke/' && method === 'POST') {
        calls.revoke += 1;
        return forward(req, res, '/token/revocation');
      }
      if (path === '/api/v1/me/' && method === 'GET') return handleMe(req, res);
      if (/^\/interaction\/[\w-]+$/.test(path) && method === 'GET') return handleInteraction(req, res);
      // The provider's own routes: resume (/auth/:uid), introspection, discovery.
      return forward(req, res);
    };
    route().catch((err: unknown) => {
      console.error('oidc-crm: unexpected failure', err);
      if (!res.headersSent) json(res, 500, { error: 'server_error' });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const signingKey = {
    ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
    alg: 'ES256',
    use: 'sig',
  };
  const p = new Provider(issuer, {
    adapter: adapterFactory(store),
    clientAuthMethods: ['client_secret_post'],
    responseTypes: ['code'],
    scopes: ['all.full_access', 'offline_access'],
    claims: { openid: ['sub'] },
    pkce: { required: () => true },
    rotateRefreshToken: true,
    // A refresh token whenever offline_access was granted (it survives the authorization request
    // thanks to the `prompt=consent` added in front; this is oidc-provider's default rule, made explicit).
    issueRefreshToken: async (
      _ctx: unknown,
      client: { grantTypeAllowed(type: string): boolean },
      code: { scopes: Set<string> },
    ) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    // Every authorization gets a fresh grant of its own (nothing reused from the browser's session).
    loadExistingGrant: async (ctx: {
      oidc: { result?: { consent?: { grantId?: string } }; provider: OidcProvider };
    }) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    ttl: {
      AccessToken: opts.accessTokenTtlSeconds ?? 3600,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 3600,
      Grant: 14 * 86_400,
      RefreshToken: 14 * 86_400,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      // The client may introspect its own tokens (isValid uses it).
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx: unknown, client: { clientId: string }, token: { clientId?: string }) =>
          token.clientId === client.clientId,
      },
      userinfo: { enabled: false },
      rpInitiatedLogout: { enabled: false },
    },
    interactions: {
      url: async (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}`,
    },
    findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ sub }) }),
    // Nothing here is signed (opaque tokens, no ID tokens), but the provider wants a key set.
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    renderError: async (ctx: { type: string; body: unknown }, out: Record<string, unknown>) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  p.use(async (ctx, next) => {
    await next();
    // Close's token response carries the organization picked at consent and the user.
    if (
      ctx.path === '/token' &&
      ctx.status === 200 &&
      ctx.body !== null &&
      typeof ctx.body === 'object' &&
      'access_token' in ctx.body
    ) {
      ctx.body = { ...ctx.body, organization_id: organizationId, user_id: ACCOUNT.id };
    }
    // oidc-provider@9 always adds RFC 9207 `iss` to authorization responses (no option turns it
    // off); Close sends none, so it is taken off the redirect back to the client.
    if (!opts.issuerInResponse && ctx.status >= 300 && ctx.status < 400) {
      const location = ctx.response.get('Location');
      if (location) {
        const url = new URL(location, issuer);
        if (url.origin !== issuer && url.searchParams.has('iss')) {
          url.searchParams.delete('iss');
          ctx.set('Location', url.toString());
          ctx.body = 'Redirecting.';
        }
      }
    }
  });
  p.on('grant.error', (_ctx: unknown, err: unknown) => {
    if ((err as { error_detail?: string }).error_detail === 'refresh token already used') {
      calls.reuseDetected += 1;
    }
  });
  p.on('server_error', (_ctx: unknown, err: unknown) =>
    console.error('oidc-crm: provider server_error', err),
  );
  ready.provider = p;
  ready.app = p.callback();

  const env = {
    CLOSE_CLIENT_ID: clientId,
    CLOSE_CLIENT_SECRET: clientSecret,
    CLOSE_AUTHORIZE_URL: `${issuer}/oauth2/authorize/`,
    CLOSE_TOKEN_URL: `${issuer}/oauth2/token/`,
    CLOSE_REVOKE_URL: `${issuer}/oauth2/revoke/`,
    CLOSE_API_BASE_URL: `${issuer}/api/v1`,
    CLOSE_SCOPES: 'all.full_access offline_access',
  };

  return {
    issuer,
    env,
    calls,
    failNextToken(reply, times = 1) {
      for (let i = 0; i < times; i++) failures.push(reply);
    },
    setTokenLatency(ms) {
      latencyMs = ms;
    },
    setRedirectUris,
    async setClientSecret(secret) {
      acceptedSecret = secret;
      await setRedirectUris(registeredUris);
    },
    async revokeAll() {
      for (const grantId of grants) {
        await Promise.all([
          p.AccessToken.revokeByGrantId(grantId),
          p.RefreshToken.revokeByGrantId(grantId),
          p.AuthorizationCode.revokeByGrantId(grantId),
        ]);
        await (await p.Grant.find(grantId))?.destroy();
      }
      grants.clear();
    },
    async isValid(accessToken) {
      const res = await fetch(`${issuer}/token/introspection`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          token: accessToken,
          token_type_hint: 'access_token',
          client_id: clientId,
          client_secret: acceptedSecret,
        }).toString(),
      });
      if (res.status !== 200) throw new Error(`introspection answered ${res.status}`);
      const body = (await res.json()) as { active?: unknown; token_type?: unknown };
      return body.active === true && body.token_type !== 'refresh_token';
    },
    reset() {
      for (const key of Object.keys(calls) as (keyof typeof calls)[]) calls[key] = 0;
      failures = [];
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** RFC 7636 S256 challenge of a verifier (for tests that drive the flow by hand). */
export const s256 = (verifier: string) => createHash('sha256').update(verifier).digest('base64url');
