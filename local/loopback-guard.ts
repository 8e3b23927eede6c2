/**
 * The local server's guard for its service endpoints: the Lambda Invoke API and the routes that IAM
 * protects in AWS (`authorization: 'IAM'` in the manifest). Locally nothing signs or checks those
 * calls, so they answer only programs on this machine that address the loopback host by name, and
 * never a web page: not one on another site (CSRF), not one whose own name now resolves to 127.0.0.1
 * (DNS rebinding). docs/local.md, "What no web page can do"; SECURITY.md row 22.
 *
 * The rule, for a server listening on `port`:
 * - `Host` must be exactly `localhost:<port>`, `127.0.0.1:<port>` or `[::1]:<port>` (ASCII case
 *   ignored). The port is required: browsers and HTTP clients always send it when it is not the
 *   scheme's default, so a bare name is accepted only when `port` is 80. A missing `Host` is refused.
 * - `Origin`, when present at all, must be `http://localhost:<port>`, `http://127.0.0.1:<port>` or
 *   `http://[::1]:<port>`; any other value is refused, `null` included (a browser sends `null` for
 *   opaque origins and under `Referrer-Policy: no-referrer`, so it says nothing about who asks). The
 *   AWS SDK and curl send no `Origin`.
 * - `Sec-Fetch-Site`, when present, must be `same-origin` or `none`; `same-site` (another port on
 *   localhost) and `cross-site` are refused.
 *
 * The demo page's actions (`POST /demo/*`, local/home.ts) check Origin and Sec-Fetch-Site themselves
 * and must take `Origin: null` (their own forms send it under `Referrer-Policy: no-referrer`), which a
 * DNS-rebound page can send as well; `demoActionRefusal` adds the Host check they lack.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** Why a request was refused; a fixed text, never a header value. */
export const refusalReasons = {
  host: "Host is not this server's loopback address and port",
  origin: "Origin is not this server's loopback origin",
  fetchSite: 'Sec-Fetch-Site is not same-origin or none',
} as const;
export type RefusalReason = (typeof refusalReasons)[keyof typeof refusalReasons];

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'] as const;
const SAFE_FETCH_SITES = new Set(['same-origin', 'none']);

/** `localhost:<port>`, `127.0.0.1:<port>`, `[::1]:<port>` (and the bare names on port 80). */
function loopbackHosts(port: number): Set<string> {
  const hosts = LOOPBACK_NAMES.map((name) => `${name}:${port}`);
  return new Set(port === 80 ? [...hosts, ...LOOPBACK_NAMES] : hosts);
}

/** `http://` + each of them: the origins of pages this server serves on its loopback names. */
const origins = (hosts: Set<string>): Set<string> => new Set([...hosts].map((host) => `http://${host}`));

const single = (value: string | string[] | undefined): string | undefined =>
  Array.isArray(value) ? value.join(', ') : value;

const isAllowedHost = (host: string | undefined, hosts: Set<string>): boolean =>
  host !== undefined && hosts.has(host.toLowerCase());

/**
 * Why a request to the Invoke API or an IAM route must be refused (403, handler not run), or
 * undefined when it may go on.
 */
export function serviceRequestRefusal(
  req: { headers: IncomingHttpHeaders },
  port: number,
): RefusalReason | undefined {
  const hosts = loopbackHosts(port);
  if (!isAllowedHost(req.headers.host, hosts)) return refusalReasons.host;
  const origin = single(req.headers.origin);
  if (origin !== undefined && !origins(hosts).has(origin.toLowerCase())) return refusalReasons.origin;
  const site = single(req.headers['sec-fetch-site']);
  if (site !== undefined && !SAFE_FETCH_SITES.has(site)) return refusalReasons.fetchSite;
  return undefined;
}

/**
 * Why a demo-page action (`POST /demo/*`) must be refused for its Host, or undefined: it must be one of
 * the loopback hosts above or the host of `PUBLIC_BASE_URL` (`publicHost`, e.g. a tunnel's name),
 * never a name an attacker rebound to 127.0.0.1.
 */
export function demoActionRefusal(
  req: { headers: IncomingHttpHeaders },
  port: number,
  publicHost: string,
): RefusalReason | undefined {
  const hosts = loopbackHosts(port).add(publicHost.toLowerCase());
  return isAllowedHost(req.headers.host, hosts) ? undefined : refusalReasons.host;
}
