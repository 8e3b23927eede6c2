/**
 * The shared rate-limit budget of a CRM account, seen by every caller of that
 * account in any container (issue 14). Placeholder body while the store item
 * is built: admits everything, records nothing. The signatures are final.
 */
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps } from '../ports.ts';

export type Admission = { admitted: true } | { admitted: false; retryAfterSeconds: number };

/** Before each CRM call: waits while the account's shared budget is spent if the wait fits before `deadline` (epoch ms), else refuses. */
export function admitRequest(
  _deps: Deps,
  _connection: ConnectionRecord,
  _deadline: number,
): Promise<Admission> {
  return Promise.resolve({ admitted: true });
}

/** After each CRM answer: records the CRM's rate-limit headers / 429 for every caller of that account. */
export function recordCrmAnswer(
  _deps: Deps,
  _connection: ConnectionRecord,
  _answer: { status: number; headers: Readonly<Record<string, string>> },
): Promise<void> {
  return Promise.resolve();
}
