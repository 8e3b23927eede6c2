/**
 * API Gateway HTTP API (payload v2) helpers: reading queries, forms and
 * cookies with size limits, and HTML pages carrying the headers of
 * security.md rows 8 and 17, written with the escaping `markup` template.
 */
import { randomBytes } from 'node:crypto';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { FlowError } from '../../core/domain/errors.ts';
import { SafeHtml, markup, trusted } from './html.ts';

export { SafeHtml, markup } from './html.ts';

export type HttpEvent = APIGatewayProxyEventV2;
export type HttpResult = APIGatewayProxyStructuredResultV2;

export const MAX_FORM_BYTES = 16 * 1024;
export const FLOW_COOKIE = '__Host-crm-broker-flow';

/** Query parameters as API Gateway gives them (duplicate keys joined by commas). */
export const queryParams = (event: HttpEvent): Record<string, string | undefined> =>
  event.queryStringParameters ?? {};

function header(event: HttpEvent, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(event.headers ?? {}))
    if (key.toLowerCase() === wanted) return value;
  return undefined;
}

/**
 * An `application/x-www-form-urlencoded` body, capped at `MAX_FORM_BYTES`.
 * Duplicate keys are joined by commas, as API Gateway does for queries, so a
 * doubled `state` can never match.
 */
export function formParams(event: HttpEvent): Record<string, string> {
  if (!event.body) return {};
  const type = (header(event, 'content-type') ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new FlowError('invalid_request', 'The callback body must be a form.');
  }
  const raw = event.isBase64Encoded ? Buffer.from(event.body, 'base64') : Buffer.from(event.body, 'utf8');
  if (raw.length > MAX_FORM_BYTES) throw new FlowError('body_too_large', 'The request body is too large.');
  const out: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(raw.toString('utf8'))) {
    out[key] = key in out ? `${out[key]},${value}` : value;
  }
  return out;
}

/** Cookies from the v2 event's `cookies` array (a repeated name counts as absent: ambiguous). */
export function readCookie(event: HttpEvent, name: string): string | undefined {
  let found: string | undefined;
  for (const pair of event.cookies ?? []) {
    const eq = pair.indexOf('=');
    if (eq < 0 || pair.slice(0, eq).trim() !== name) continue;
    if (found !== undefined) return undefined;
    found = pair.slice(eq + 1).trim();
  }
  return found;
}

export function flowCookie(value: string, maxAgeSeconds: number, sameSite: 'Lax' | 'None' = 'Lax'): string {
  return `${FLOW_COOKIE}=${value}; Path=/; Secure; HttpOnly; SameSite=${sameSite}; Max-Age=${maxAgeSeconds}`;
}

const baseHeaders = {
  'Cache-Control': 'no-store',
  Pragma: 'no-cache',
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Strict-Transport-Security': 'max-age=63072000; includeSubDomains',
};

export function redirect(location: string, cookies?: string[]): HttpResult {
  return {
    statusCode: 302,
    headers: { ...baseHeaders, Location: location, 'Content-Security-Policy': "default-src 'none'" },
    ...(cookies ? { cookies } : {}),
    body: '',
  };
}

export interface PageOptions {
  /** Inline script (trusted, static), allowed by a per-response nonce. */
  script?: string;
  /** Origins the page's forms may post to (`'self'` by default: none). */
  formAction?: string;
  /** Lay the page out wide (tables). */
  wide?: boolean;
}

/** An HTML page. The body is a `markup` fragment: every value in it escaped. */
export function htmlPage(
  statusCode: number,
  title: string,
  body: SafeHtml,
  options: PageOptions = {},
): HttpResult {
  // Base64 from our own random bytes: nothing in it needs escaping in a quoted attribute.
  const nonce = randomBytes(16).toString('base64');
  const csp = [
    "default-src 'none'",
    `style-src 'nonce-${nonce}'`,
    options.script ? `script-src 'nonce-${nonce}'` : '',
    `form-action ${options.formAction ?? "'self'"}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ]
    .filter(Boolean)
    .join('; ');
  const script =
    options.script && markup`<script nonce="${trusted(nonce)}">${trusted(options.script)}</script>`;
  const page = markup`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style nonce="${trusted(nonce)}">body{font:16px/1.5 system-ui,sans-serif;max-width:${options.wide ? '72rem' : '40rem'};margin:3rem auto;padding:0 1rem;color:#1d2430}
h1{font-size:1.5rem}.ok{color:#0a7a3d}.err{color:#b42318}code{background:#f2f4f7;padding:.1rem .3rem;border-radius:3px}
button{font:inherit;padding:.5rem 1rem}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #e4e7ec;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal}td form{display:inline}</style></head>
<body>${body}${script}</body></html>`;
  return {
    statusCode,
    headers: { ...baseHeaders, 'Content-Type': 'text/html; charset=utf-8', 'Content-Security-Policy': csp },
    body: page.value,
  };
}

export function errorPage(statusCode: number, code: string, message: string): HttpResult {
  return htmlPage(
    statusCode,
    'Connection failed',
    markup`<h1 class="err">The CRM connection did not complete</h1><p>${message}</p>
<p>Error code: <code>${code}</code></p><p>You can close this page and start again from the app.</p>`,
  );
}

/** `returnTo` with the outcome appended; no code or token is ever put in it. */
export function returnToWith(returnTo: string, params: Record<string, string>): string {
  const url = new URL(returnTo);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.toString();
}
