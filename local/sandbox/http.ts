/** Request parsing and response writing for the sandbox CRMs. */
import { BodyTooLarge, readBodyBytes } from '../request-body.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';

export const MAX_BODY_BYTES = 64 * 1024;

/** A request the sandbox refuses; `respond` says how. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** Reads a request body of at most `limit` bytes; a larger one is a 413. */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<string> {
  return readBodyBytes(req, limit).then(
    (body) => body.toString('utf8'),
    (err: unknown) => {
      throw err instanceof BodyTooLarge ? new HttpError(413, 'Request body too large') : err;
    },
  );
}

/**
 * Parameters of a form (or, where accepted, JSON) body. Every parameter must
 * be a string and appear once (RFC 6749 §3.1, §3.2).
 */
export function parseParams(
  contentType: string | undefined,
  body: string,
  accepted: readonly ('form' | 'json')[],
): Map<string, string> {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  const out = new Map<string, string>();
  const add = (key: string, value: string) => {
    if (out.has(key)) throw new HttpError(400, `Parameter ${key} is repeated`);
    out.set(key, value);
  };
  if (type === 'application/x-www-form-urlencoded' && accepted.includes('form')) {
    for (const [key, value] of new URLSearchParams(body)) add(key, value);
    return out;
  }
  if (type === 'application/json' && accepted.includes('json')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new HttpError(400, 'Body is not valid JSON');
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new HttpError(400, 'Body must be a JSON object');
    }
    for (const [key, value] of Object.entries(parsed)) {
      if (typeof value !== 'string') throw new HttpError(400, `Parameter ${key} must be a string`);
      add(key, value);
    }
    return out;
  }
  throw new HttpError(400, 'Unsupported content type');
}

/** Query parameters, each at most once. */
export function queryParams(url: URL): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, value] of url.searchParams) {
    if (out.has(key)) throw new HttpError(400, `Parameter ${key} is repeated`);
    out.set(key, value);
  }
  return out;
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(JSON.stringify(body));
}

/** RFC 6749 §5.2 error response. */
export function sendOAuthError(
  res: ServerResponse,
  status: 400 | 401,
  error: string,
  description?: string,
): void {
  sendJson(res, status, { error, ...(description ? { error_description: description } : {}) });
}

export function sendRedirect(res: ServerResponse, location: string, status = 302): void {
  res.writeHead(status, {
    Location: location,
    'Cache-Control': 'no-store',
    'Referrer-Policy': 'no-referrer',
  });
  res.end();
}

export function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
) {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(text);
}
