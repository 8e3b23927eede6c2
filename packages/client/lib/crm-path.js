// @ts-check
/**
 * Where `fetch` may send a token: only under the connection's API base. The path is checked before
 * any token is fetched, with the rules `crm-request` applies, and the URL built from it is checked
 * again after parsing, so nothing the URL parser normalises can move the request elsewhere.
 */
import { InvalidRequest } from './errors.js';

const MAX_PATH_LENGTH = 2048;

/**
 * RFC 3986 path characters (unreserved, sub-delims, `:` and `/`) and percent-encodings. Left out on
 * purpose: `@` (userinfo), `\` (read as `/` by URL parsers), `?` and `#` (query and fragment belong
 * in `query`), whitespace, control and non-ASCII characters.
 */
const PATH_CHARACTERS = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:/]|%[0-9A-Fa-f]{2})*$/;

/**
 * Percent-encodings that could hide a dot segment, a separator or a second decoding step:
 * `.` `/` `\` `%` `@` `?` `#`, and control characters.
 */
const REFUSED_ENCODINGS = /%(?:2e|2f|5c|25|40|3f|23|[01][0-9a-f]|7f)/i;

/** What the path may not hold once decoded either (as crm-request checks): `\`, `@`, `#`, `?`, whitespace, controls. */
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const REFUSED_ONCE_DECODED = /[\\@#?\s\x00-\x1f\x7f]/u;

/**
 * Checks a path relative to a CRM's API base, e.g. `/me/` or `/parties/42`; throws `InvalidRequest`
 * (without echoing the path, which may carry ids the caller considers private) when it is not one.
 * @param {unknown} path
 * @returns {asserts path is string}
 */
export function checkApiPath(path) {
  const refuse = (/** @type {string} */ why) => {
    throw new InvalidRequest(`path ${why}`);
  };
  if (typeof path !== 'string') return refuse('must be a string');
  if (path.length === 0 || path.length > MAX_PATH_LENGTH) return refuse('must be 1 to 2048 characters');
  if (!path.startsWith('/')) return refuse("must start with '/' (relative to the CRM's API base)");
  if (path.startsWith('//')) return refuse("must not start with '//'");
  if (!PATH_CHARACTERS.test(path)) {
    return refuse("may hold only RFC 3986 path characters, without '@', '\\', '?', '#' or whitespace");
  }
  if (REFUSED_ENCODINGS.test(path)) return refuse('must not percent-encode dots, slashes, backslashes or %');
  // `%` itself is refused above, so one decoding is all there is to look through.
  let decoded;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return refuse('must percent-encode only valid UTF-8');
  }
  if (REFUSED_ONCE_DECODED.test(decoded)) {
    return refuse("must not encode '@', '\\', '?', '#', whitespace or control characters");
  }
  const segments = path.slice(1).split('/');
  for (const [i, segment] of segments.entries()) {
    if (segment === '.' || segment === '..') return refuse("must not have '.' or '..' segments");
    // An empty segment is allowed only as the trailing slash (`/me/`).
    if (segment === '' && i !== segments.length - 1) return refuse("must not have empty segments ('//')");
  }
}

/**
 * @typedef {Record<string, string | number | boolean | readonly (string | number | boolean)[]>} Query
 */

/**
 * The URL of `path` under `apiBaseUrl`, with `query` appended; throws `InvalidRequest` if the result
 * is anywhere but under that base.
 * @param {string} apiBaseUrl
 * @param {string} path
 * @param {Query | undefined} query
 * @returns {URL}
 */
export function crmUrl(apiBaseUrl, path, query) {
  checkApiPath(path);
  const base = new URL(apiBaseUrl);
  const basePath = base.pathname.replace(/\/+$/, '');
  const url = new URL(`${base.origin}${basePath}${path}`);
  if (
    url.origin !== base.origin ||
    url.pathname !== `${basePath}${path}` ||
    url.username !== '' ||
    url.password !== '' ||
    url.search !== '' ||
    url.hash !== ''
  ) {
    throw new InvalidRequest("path leaves the CRM's API base");
  }
  if (query !== undefined) {
    if (typeof query !== 'object' || query === null || Array.isArray(query)) {
      throw new InvalidRequest('query must be an object of strings');
    }
    for (const [name, value] of Object.entries(query)) {
      for (const v of Array.isArray(value) ? value : [value]) {
        if (!['string', 'number', 'boolean'].includes(typeof v)) {
          throw new InvalidRequest('query values must be strings, numbers or booleans');
        }
        url.searchParams.append(name, String(v));
      }
    }
  }
  return url;
}
