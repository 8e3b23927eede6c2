/**
 * The access trail: one structured line per call that hands out or ends access
 * to a customer's CRM (`token-fetch`, `refresh`, `connections delete` and
 * `confirm`, `crm-request`): which function, which connection, whether the
 * caller named an owner, and the outcome. Never a token, code or secret.
 */
import type { Log } from '../../core/ports.ts';

export interface AccessFields {
  connectionId: string | undefined;
  /** Did the caller pass `ownerId`? Callers that do cannot reach another tenant's connection. */
  ownerIdGiven: boolean;
}

export async function audited<R>(
  deps: { logger: Log },
  operation: string,
  fields: AccessFields,
  run: () => Promise<R>,
): Promise<R> {
  const line = (outcome: string) => deps.logger.info('access', { access: operation, ...fields, outcome });
  try {
    const result = await run();
    line('ok');
    return result;
  } catch (err) {
    line(err instanceof Error ? err.name : 'unknown');
    throw err;
  }
}
