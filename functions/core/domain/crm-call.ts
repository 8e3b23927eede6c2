/**
 * One call to a CRM's API on a caller's behalf (`crm-request`): what the port
 * returns, the limits that keep the answer inside a Lambda response, and how a
 * CRM's answer becomes the caller's.
 *
 * Body rule: a JSON content type (`application/json`, `*+json`) whose body
 * parses is returned parsed (`bodyEncoding: "json"`); text content types
 * (`text/*`, XML, form-encoded, JavaScript, or none with a body that is valid
 * UTF-8) as a string (`"text"`); anything else base64 (`"base64"`); no body at
 * all is `body: null` (`"none"`). A CRM body over `MAX_CRM_BODY_BYTES`, or an
 * answer whose JSON would exceed `MAX_ANSWER_BYTES`, comes back with
 * `body: null` and `bodyTooLarge: true`, status and headers intact: the call
 * happened (a POST may have created something), only its body is withheld.
 */

/** Largest CRM body read (bytes); reading stops there. Base64 of it (4/3) still fits the answer. */
export const MAX_CRM_BODY_BYTES = 4 * 1024 * 1024;
/** Largest serialized answer: Lambda's synchronous response limit is 6 MB; room is kept for the rest. */
export const MAX_ANSWER_BYTES = 5.5 * 1024 * 1024;

/** Attempts of one call when it may be repeated (GET, HEAD, `idempotent: true`), the first included. */
export const CRM_CALL_ATTEMPTS = 3;
/** Backoff before a repeated attempt: 200 ms doubling, at most 1 s, with jitter. */
export const CRM_RETRY_BASE_MS = 200;
export const CRM_RETRY_MAX_MS = 1_000;
/** One phase of attempts (before a 401, or the retry after its refresh) ends within this. */
export const CRM_CALL_MAX_MS = 30_000;
/** The token is refreshed first when it would not stay valid this long (the call must fit in it). */
export const CRM_TOKEN_MIN_VALIDITY_SECONDS = 60;

/** What the CRM answered, as the port read it. */
export interface CrmAnswer {
  status: number;
  /** Lowercase names; repeated headers joined by `, ` (as fetch does). */
  headers: Record<string, string>;
  /** The body, or null when there was none or it was over the cap (`tooLarge`). */
  body: Uint8Array | null;
  tooLarge: boolean;
}

/** The CRM could not be reached, or its answer was lost; `sent` is false when the request surely never left. */
export class CrmUnreachable extends Error {
  constructor(
    readonly sent: boolean,
    options?: { cause?: unknown },
  ) {
    super(sent ? 'The CRM did not answer' : 'The CRM could not be reached', options);
    this.name = 'CrmUnreachable';
  }
}

export type BodyEncoding = 'json' | 'text' | 'base64' | 'none';

export interface CrmRequestAnswer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
  bodyEncoding: BodyEncoding;
  /** The CRM's body was too large for a Lambda answer and was left out (`body: null`). */
  bodyTooLarge: boolean;
  /** On `status: 429`: seconds to wait (the CRM's `Retry-After`, or the shared budget's reset); else null. */
  retryAfterSeconds: number | null;
}

/** Response headers never passed on: cookies of the API session and hop-by-hop headers. */
const DROPPED_HEADERS = new Set([
  'set-cookie',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-encoding',
  'content-length',
  'trailer',
  'upgrade',
]);

export function answerHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !DROPPED_HEADERS.has(name)));
}

const isJsonType = (type: string) => /^application\/(?:[\w.+-]+\+)?json$/.test(type);
const isTextType = (type: string) =>
  type.startsWith('text/') ||
  /^application\/(?:[\w.+-]+\+)?xml$/.test(type) ||
  type === 'application/x-www-form-urlencoded' ||
  type === 'application/javascript';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The caller's view of a body (see the module comment). */
export function decodeBody(
  contentType: string | undefined,
  body: Uint8Array | null,
): { body: unknown; bodyEncoding: BodyEncoding } {
  if (body === null || body.byteLength === 0) return { body: null, bodyEncoding: 'none' };
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  let text: string | undefined;
  if (isJsonType(type) || isTextType(type) || type === '') {
    try {
      text = utf8.decode(body);
    } catch {
      text = undefined;
    }
  }
  if (text !== undefined && isJsonType(type)) {
    try {
      return { body: JSON.parse(text) as unknown, bodyEncoding: 'json' };
    } catch {
      return { body: text, bodyEncoding: 'text' };
    }
  }
  if (text !== undefined) return { body: text, bodyEncoding: 'text' };
  return { body: Buffer.from(body).toString('base64'), bodyEncoding: 'base64' };
}

/** Whole seconds from a `Retry-After` (delta-seconds or HTTP date), capped at an hour. */
export function retryAfterFrom(headers: Readonly<Record<string, string>>, now: number): number | null {
  const raw = headers['retry-after']?.trim();
  if (!raw) return null;
  const seconds = /^\d+$/.test(raw) ? Number(raw) : (Date.parse(raw) - now) / 1000;
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(Math.ceil(seconds), 3600) : null;
}

/** The caller's answer for a CRM answer, with the body withheld when the whole would not fit. */
export function shapeAnswer(answer: CrmAnswer, now: number): CrmRequestAnswer {
  const headers = answerHeaders(answer.headers);
  const retryAfterSeconds = answer.status === 429 ? retryAfterFrom(answer.headers, now) : null;
  const withheld: CrmRequestAnswer = {
    status: answer.status,
    headers,
    body: null,
    bodyEncoding: 'none',
    bodyTooLarge: true,
    retryAfterSeconds,
  };
  if (answer.tooLarge) return withheld;
  const shaped: CrmRequestAnswer = {
    status: answer.status,
    headers,
    ...decodeBody(answer.headers['content-type'], answer.body),
    bodyTooLarge: false,
    retryAfterSeconds,
  };
  return Buffer.byteLength(JSON.stringify(shaped)) > MAX_ANSWER_BYTES ? withheld : shaped;
}
