/**
 * Sandbox CRMs for the local server: Copper, Capsule CRM and Close imitated on
 * `{base}/sandbox/...` paths mirroring their real hosts and paths, with their
 * quirks (shared/providers.md), so the whole connect flow can be clicked
 * through in a browser and tested without a CRM account.
 *
 * Control endpoints for tests and the demo page live under
 * `{base}/sandbox/_control/`: `GET calls`, `POST revoke?provider=...`, `POST reset`,
 * `GET rate-limit` (each CRM's limit and every API request the limiters saw) and
 * `POST rate-limit?provider=...&limit=<requests>/<seconds>` (rate-limit.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type CrmSpec,
  type SandboxProvider,
  crms,
  envPrefix,
  isSandboxProvider,
  sandboxProviders,
} from './crms.ts';
import { sendErrorPage, sendIndexPage } from './html.ts';
import { HttpError, sendJson, sendRedirect, sendText } from './http.ts';
import { type OAuthContext, api, authorizeDecision, authorizeRequest, revoke, token } from './oauth.ts';
import { SandboxStore } from './store.ts';
import { type SandboxRateLimit, SandboxRateLimiter, parseSandboxRateLimit } from './rate-limit.ts';

export { type SandboxProvider, crms, sandboxProviders } from './crms.ts';

export interface SandboxOptions {
  /** Where the local server is reachable, e.g. `http://localhost:3000`; used to build absolute URLs. */
  baseUrl: string;
  /** Overrides the access token lifetime of the CRMs whose tokens expire (Capsule, Close). */
  tokenLifetimeSeconds?: number;
  /** A JSON file keeping grants across restarts; in memory when omitted. */
  dataFile?: string;
  /** Clock in ms (tests). */
  now?: () => number;
  /** Registered redirect URIs per CRM; default `${baseUrl}/callback/{provider}`. */
  redirectUris?: Partial<Record<SandboxProvider, readonly string[]>>;
  /** One API rate limit for every CRM (`SANDBOX_RATE_LIMIT`); default: each CRM's own, set high. */
  rateLimit?: SandboxRateLimit;
}

export interface Sandbox {
  /** Handles the request if its path starts with /sandbox/; returns false otherwise (so the caller can route it elsewhere). */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
  /**
   * Env vars that point the broker's provider registry at this sandbox, for the given providers:
   * `<P>_CLIENT_ID`, `<P>_CLIENT_SECRET`, `<P>_AUTHORIZE_URL`, `<P>_TOKEN_URL`, `<P>_REVOKE_URL`
   * (only where the CRM has one), `<P>_API_BASE_URL`; P = COPPER | CAPSULE | CLOSE.
   */
  env(providers?: readonly SandboxProvider[]): Record<string, string>;
  /** Calls per provider and endpoint (`authorize`, `token:<grant_type>`, `revoke`, `identity`). */
  calls(): Record<string, Record<string, number>>;
  /** Revokes every grant of a provider, as when the user removes the app at the CRM. */
  revokeAll(provider: SandboxProvider): void;
  /** The CRMs' API rate limits and what they saw. */
  rateLimits: SandboxRateLimiter;
  close(): Promise<void>;
}

const PREFIX = '/sandbox';
const CONTROL = `${PREFIX}/_control`;

type Handler = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> | void;

/** Counter keys every provider starts with (at zero), from what its spec says it has. */
function initialCalls(crm: CrmSpec): Record<string, number> {
  return {
    authorize: 0,
    'token:authorization_code': 0,
    ...(crm.refresh !== 'none' ? { 'token:refresh_token': 0 } : {}),
    ...(crm.revoke ? { revoke: 0 } : {}),
    identity: 0,
  };
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

export function createSandbox(opts: SandboxOptions): Sandbox {
  const base = opts.baseUrl.replace(/\/+$/, '');
  const baseOrigin = new URL(base).origin;
  const now = opts.now ?? Date.now;
  const store = new SandboxStore(now, opts.dataFile);
  const rateLimits = new SandboxRateLimiter(crms, now, opts.rateLimit);
  let counters = {} as Record<SandboxProvider, Record<string, number>>;
  const resetCounters = () => {
    counters = Object.fromEntries(sandboxProviders.map((p) => [p, initialCalls(crms[p])])) as typeof counters;
  };
  resetCounters();

  const ctx: OAuthContext = {
    base,
    now,
    ...(opts.tokenLifetimeSeconds ? { tokenLifetimeSeconds: opts.tokenLifetimeSeconds } : {}),
    store,
    pending: new Map(),
    count(provider, endpoint) {
      counters[provider][endpoint] = (counters[provider][endpoint] ?? 0) + 1;
    },
    redirectUris: (provider) => opts.redirectUris?.[provider] ?? [`${base}/callback/${provider}`],
    admitApiCall: (crm, grant, res) => rateLimits.admit(crm, grant.organizationId ?? 'account', res),
  };

  const calls = () =>
    Object.fromEntries(Object.entries(counters).map(([p, c]) => [p, { ...c }])) as Record<
      string,
      Record<string, number>
    >;

  const revokeAll = (provider: SandboxProvider) => {
    ctx.store.revokeProvider(provider);
    for (const [id, pending] of ctx.pending) if (pending.provider === provider) ctx.pending.delete(id);
  };

  /**
   * Control requests come from tests, curl or the local demo pages, never from another site. The
   * sandbox's own page is served with `Referrer-Policy: no-referrer`, so a browser posting its forms
   * sends `Origin: null`: then `Sec-Fetch-Site: same-origin` is what vouches for it.
   */
  const controlAllowed = (req: IncomingMessage) => {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    if (origin === 'null') return site === 'same-origin';
    try {
      const u = new URL(origin);
      return u.origin === baseOrigin || LOOPBACK.has(u.hostname);
    } catch {
      return false;
    }
  };
  /** A form posted from the `/sandbox/` page goes back to it; anything else gets JSON. */
  const controlAnswer = (req: IncomingMessage, res: ServerResponse, body: unknown) => {
    if ((req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      sendRedirect(res, `${PREFIX}/`, 303);
    } else sendJson(res, 200, body);
  };

  // Exact paths -> method -> handler, built from the specs.
  const routes = new Map<string, Record<string, Handler>>();
  const apiBases: [string, CrmSpec][] = [];
  for (const p of sandboxProviders) {
    const crm = crms[p];
    routes.set(`${PREFIX}${crm.paths.authorize}`, {
      GET: (_req, res, url) => authorizeRequest(crm, ctx, url, res),
      POST: (req, res) => authorizeDecision(crm, ctx, req, res),
    });
    routes.set(`${PREFIX}${crm.paths.token}`, { POST: (req, res) => token(crm, ctx, req, res) });
    if (crm.revoke)
      routes.set(`${PREFIX}${crm.revoke.path}`, { POST: (req, res) => revoke(crm, ctx, req, res) });
    apiBases.push([`${PREFIX}${crm.paths.apiBase}`, crm]);
  }
  routes.set(`${PREFIX}/`, {
    GET: (_req, res) =>
      sendIndexPage(
        res,
        sandboxProviders.map((p) => ({
          crm: crms[p],
          base: `${base}${PREFIX}`,
          grants: store.stats(p).grants,
          calls: { ...counters[p] },
        })),
      ),
  });
  routes.set(`${CONTROL}/calls`, { GET: (_req, res) => sendJson(res, 200, calls()) });
  routes.set(`${CONTROL}/revoke`, {
    POST: (req, res, url) => {
      const provider = url.searchParams.get('provider');
      if (!isSandboxProvider(provider)) {
        return sendJson(res, 400, { error: 'provider must be one of copper, capsule, close' });
      }
      const grants = store.stats(provider).grants;
      revokeAll(provider);
      controlAnswer(req, res, { provider, revokedGrants: grants });
    },
  });
  routes.set(`${CONTROL}/rate-limit`, {
    GET: (_req, res) =>
      sendJson(res, 200, {
        limits: Object.fromEntries(sandboxProviders.map((p) => [p, rateLimits.limit(p)])),
        arrivals: rateLimits.arrivals(),
      }),
    POST: (req, res, url) => {
      const provider = url.searchParams.get('provider');
      const limit = parseSandboxRateLimit(url.searchParams.get('limit') ?? undefined);
      if (!isSandboxProvider(provider) || !limit) {
        return sendJson(res, 400, {
          error: 'provider must be one of copper, capsule, close and limit <requests>/<seconds>',
        });
      }
      rateLimits.setLimit(provider, limit);
      controlAnswer(req, res, { provider, limit });
    },
  });
  routes.set(`${CONTROL}/reset`, {
    POST: (req, res) => {
      resetCounters();
      rateLimits.reset();
      controlAnswer(req, res, { reset: true });
    },
  });

  async function dispatch(req: IncomingMessage, res: ServerResponse, url: URL) {
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const route = routes.get(path);
    if (route) {
      if (path.startsWith(`${CONTROL}/`) && !controlAllowed(req)) {
        return sendJson(res, 403, { error: 'control endpoints accept local requests only' });
      }
      const handler = route[method] ?? (method === 'HEAD' ? route.GET : undefined);
      if (!handler) {
        return sendText(res, 405, 'Method not allowed', { Allow: Object.keys(route).join(', ') });
      }
      return handler(req, res, url);
    }
    for (const [apiBase, crm] of apiBases) {
      if (path.startsWith(`${apiBase}/`)) return api(crm, ctx, req, res, path.slice(apiBase.length));
    }
    sendErrorPage(res, 404, 'There is nothing at this sandbox address.');
  }

  return {
    async handle(req, res) {
      const raw = req.url ?? '/';
      // Path only: never let `//host/...` be read as an authority.
      const url = new URL(`http://sandbox.invalid${raw.startsWith('/') ? raw : `/${raw}`}`);
      if (!url.pathname.startsWith(`${PREFIX}/`)) return false;
      try {
        store.prune();
        await dispatch(req, res, url);
      } catch (err) {
        if (res.headersSent) {
          res.end();
        } else if (err instanceof HttpError) {
          const crm = sandboxProviders
            .map((p) => crms[p])
            .find((c) => url.pathname.startsWith(`${PREFIX}/${c.id}`));
          if (err.status === 413) res.setHeader('Connection', 'close');
          sendErrorPage(res, err.status, err.message, crm);
        } else {
          // Names only: a message could carry a token.
          console.error('sandbox: unexpected failure', (err as Error).name);
          sendText(res, 500, 'Internal error');
        }
      }
      return true;
    },

    env(providers = sandboxProviders) {
      const out: Record<string, string> = {};
      for (const p of providers) {
        const crm = crms[p];
        const P = envPrefix(p);
        out[`${P}_CLIENT_ID`] = crm.client.id;
        out[`${P}_CLIENT_SECRET`] = crm.client.secret;
        out[`${P}_AUTHORIZE_URL`] = `${base}${PREFIX}${crm.paths.authorize}`;
        out[`${P}_TOKEN_URL`] = `${base}${PREFIX}${crm.paths.token}`;
        if (crm.revoke) out[`${P}_REVOKE_URL`] = `${base}${PREFIX}${crm.revoke.path}`;
        out[`${P}_API_BASE_URL`] = `${base}${PREFIX}${crm.paths.apiBase}`;
        // The broker's budget is what this sandbox CRM allows, as it would be the real CRM's.
        const limit = rateLimits.limit(p);
        out[`${P}_RATE_LIMIT`] = `${limit.requests}/${limit.windowSeconds}`;
      }
      return out;
    },

    calls,
    revokeAll,
    rateLimits,

    async close() {
      store.flush();
    },
  };
}
