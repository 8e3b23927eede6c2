/**
 * The `CrmApi` port over fetch (undici in Node), as crm-http.ts calls the CRMs:
 * a timeout on every call, redirects never followed (a 3xx is the answer, so
 * the token never travels to where a `Location` points), and a cap on the
 * body read. No retries here: the use case decides what may be repeated.
 */
import type { CrmMethod } from '../../core/domain/api-path.ts';
import { type CrmAnswer, CrmUnreachable } from '../../core/domain/crm-call.ts';
import type { CrmApi } from '../../core/ports.ts';
import { neverSent, readCappedBytes } from './crm-http.ts';

export class FetchCrmApi implements CrmApi {
  constructor(private readonly fetchImpl: typeof fetch = globalThis.fetch) {}

  async send(request: {
    url: URL;
    method: CrmMethod;
    headers: Record<string, string>;
    body?: string;
    timeoutMs: number;
    maxBodyBytes: number;
  }): Promise<CrmAnswer> {
    try {
      const response = await this.fetchImpl(request.url, {
        method: request.method,
        headers: request.headers,
        ...(request.body !== undefined ? { body: request.body } : {}),
        redirect: 'manual',
        signal: AbortSignal.timeout(request.timeoutMs),
      });
      const headers: Record<string, string> = {};
      response.headers.forEach((value, name) => {
        headers[name] = value;
      });
      const { body, tooLarge } =
        request.method === 'HEAD'
          ? { body: null, tooLarge: false }
          : await readCappedBytes(response, request.maxBodyBytes);
      return { status: response.status, headers, body, tooLarge };
    } catch (err) {
      // The error may quote the URL (a path the caller chose, never the token); keep only whether it left.
      throw new CrmUnreachable(!neverSent(err), { cause: err });
    }
  }
}
