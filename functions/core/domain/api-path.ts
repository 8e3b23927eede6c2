/**
 * Where `crm-request` may send a connection's token (security.md row 23): only
 * to a path under that connection's API base, with the caller's query and
 * headers checked. Everything here is pure and throws `InvalidRequest` before
 * any outbound call.
 *
 * The path is checked twice, on what the caller wrote and on what a URL
 * parser makes of it:
 * 1. the caller's text: only RFC 3986 path characters (letters, digits,
 *    `-._~!$&'()*+,;=:/` and `%XX`), so no scheme-relative `//host`, `\`, `@`,
 *    `#`, `?`, whitespace, control or non-ASCII characters; then every layer of
 *    percent-decoding (double encoding included) must be free of `.`/`..`
 *    segments, encoded `/` or `\`, and of the characters refused above;
 * 2. the result: the URL built from the base and the path must keep the base's
 *    origin, have no credentials, start with the base path, and be exactly the
 *    path given (the parser normalised nothing away).
 */
import { InvalidRequest } from './errors.ts';

export const CRM_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type CrmMethod = (typeof CRM_METHODS)[number];

export const isCrmMethod = (value: unknown): value is CrmMethod =>
  typeof value === 'string' && (CRM_METHODS as readonly string[]).includes(value);

/** Methods safe to repeat after a 5xx or a network error without the caller saying so. */
export const isIdempotentMethod = (method: CrmMethod): boolean => method === 'GET' || method === 'HEAD';

export const MAX_PATH_LENGTH = 2048;
export const MAX_QUERY_PARAMS = 100;
export const MAX_QUERY_LENGTH = 8192;
export const MAX_HEADERS = 50;
export const MAX_HEADER_VALUE_LENGTH = 8192;

const refused = (why: string) => new InvalidRequest(`path ${why}`, 'invalid_path');

/** RFC 3986 `pchar`s and `/`, less `@` (userinfo) and with `%` only as `%XX`. */
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:/%]+$/;
const PERCENT_TRIPLETS = /^(?:[^%]|%[0-9A-Fa-f]{2})*$/;
/** Refused anywhere, before or after decoding: `\`, `@`, `#`, `?`, whitespace, control characters. */
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const NEVER = /[\\@#?\s\x00-\x1f\x7f]/u;
/** Encoded forms that must not appear in any decoding layer: `/` and `\` (`%2f`, `%5c`). */
const ENCODED_SEPARATOR = /%(?:2f|5c)/i;
const DOT_SEGMENT = /(?:^|\/)\.{1,2}(?:\/|$)/;
/** Layers of percent-decoding looked through (`%25252e` is three). */
const MAX_DECODING_LAYERS = 5;

/** Throws unless `path` is a plain path relative to an API base (see the module comment). */
export function checkApiPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0) throw refused('must be a non-empty string');
  if (path.length > MAX_PATH_LENGTH) throw refused(`must be at most ${MAX_PATH_LENGTH} characters`);
  if (!path.startsWith('/')) throw refused('must start with / (it is relative to the API base)');
  if (path.startsWith('//')) throw refused('must not start with //');
  if (!PATH_CHARS.test(path)) {
    throw refused('may contain only letters, digits, / and -._~!$&\'()*+,;=: or %XX (query goes in "query")');
  }
  let layer = path;
  for (let depth = 0; ; depth++) {
    if (!PERCENT_TRIPLETS.test(layer) && depth === 0)
      throw refused('has a % that is not followed by two hex digits');
    if (NEVER.test(layer)) throw refused('has a refused character once decoded');
    if (ENCODED_SEPARATOR.test(layer)) throw refused('must not encode / or \\');
    if (DOT_SEGMENT.test(layer)) throw refused('must not have . or .. segments, plain or encoded');
    if (layer.includes('//')) throw refused('must not have empty segments (//)');
    if (!layer.includes('%')) break;
    if (depth >= MAX_DECODING_LAYERS) throw refused('is encoded too many times');
    let decoded: string;
    try {
      decoded = decodeURIComponent(layer);
    } catch {
      // A `%` that is literal in this layer (e.g. `%25zz` decoded once): nothing further to decode.
      break;
    }
    if (decoded === layer) break;
    layer = decoded;
  }
  return path;
}

/**
 * The URL `path` names under `apiBaseUrl`, with `query` appended; throws
 * `InvalidRequest` unless it stays under the base (see the module comment).
 */
export function apiUrl(apiBaseUrl: string, path: unknown, query: Readonly<Record<string, string>> = {}): URL {
  const url = resolveUnderBase(apiBaseUrl, checkApiPath(path));
  for (const [name, value] of Object.entries(query)) url.searchParams.append(name, value);
  return url;
}

/**
 * The second check, on what a URL parser makes of base + path: same origin, no
 * credentials, no query or fragment, under the base path, and exactly the path
 * given (nothing normalised away). Exported so its own test sees it work alone.
 */
export function resolveUnderBase(apiBaseUrl: string, checked: string): URL {
  const base = new URL(apiBaseUrl);
  const basePath = base.pathname.replace(/\/+$/, '');
  const url = new URL(`${base.origin}${basePath}${checked}`);
  if (
    url.origin !== base.origin ||
    url.username !== '' ||
    url.password !== '' ||
    url.search !== '' ||
    url.hash !== '' ||
    !url.pathname.startsWith(`${basePath}/`) ||
    url.pathname !== `${basePath}${checked}`
  ) {
    throw refused('leaves the API base');
  }
  return url;
}

/** `query`: an object of string values (absent or null: none). */
export function checkQuery(query: unknown): Record<string, string> {
  if (query === undefined || query === null) return {};
  if (typeof query !== 'object' || Array.isArray(query)) {
    throw new InvalidRequest('query must be an object of string values');
  }
  const entries = Object.entries(query);
  if (entries.length > MAX_QUERY_PARAMS)
    throw new InvalidRequest(`query may have at most ${MAX_QUERY_PARAMS} parameters`);
  let length = 0;
  for (const [name, value] of entries) {
    if (name.length === 0 || typeof value !== 'string') {
      throw new InvalidRequest('query must be an object of string values with non-empty names');
    }
    length += name.length + value.length;
  }
  if (length > MAX_QUERY_LENGTH)
    throw new InvalidRequest(`query may be at most ${MAX_QUERY_LENGTH} characters`);
  return Object.fromEntries(entries) as Record<string, string>;
}

/** RFC 9110 field-name `token`. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Visible ASCII, space and tab: no CR, LF or NUL (header injection). */
const HEADER_VALUE = /^[\t\x20-\x7e]*$/;

/**
 * Headers the broker sets or that belong to the connection, not the request:
 * credentials (the broker adds them; Copper's `X-PW-*` identify the user), the
 * target (`Host`), cookies, and the hop-by-hop and framing headers.
 */
const REFUSED_HEADERS = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'expect',
  'x-pw-accesstoken',
  'x-pw-useremail',
]);

/** `headers`: an object of string values, each name a valid field name the caller may set. */
export function checkHeaders(headers: unknown): Record<string, string> {
  if (headers === undefined || headers === null) return {};
  if (typeof headers !== 'object' || Array.isArray(headers)) {
    throw new InvalidRequest('headers must be an object of string values');
  }
  const entries = Object.entries(headers);
  if (entries.length > MAX_HEADERS) throw new InvalidRequest(`at most ${MAX_HEADERS} headers`);
  const seen = new Set<string>();
  for (const [name, value] of entries) {
    if (!HEADER_NAME.test(name)) throw new InvalidRequest('a header name is not a valid field name');
    const lower = name.toLowerCase();
    if (REFUSED_HEADERS.has(lower)) {
      throw new InvalidRequest(`the ${lower} header is set by the broker or not allowed`);
    }
    if (seen.has(lower)) throw new InvalidRequest('a header is given twice');
    seen.add(lower);
    if (typeof value !== 'string' || value.length > MAX_HEADER_VALUE_LENGTH || !HEADER_VALUE.test(value)) {
      throw new InvalidRequest('header values must be strings of visible ASCII characters');
    }
  }
  return Object.fromEntries(entries) as Record<string, string>;
}
