/**
 * `crm-request`'s timeout in the deploy manifest against the refresh timeline
 * (functions/core/domain/timeline.ts): a call answered 401, the refresh that
 * follows and the retried call fit in it with the default CRM timeout. (A
 * refresh starts only when its worst case fits before the function's deadline,
 * so a longer run is cut before the refresh, never inside it.)
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { CRM_CALL_ATTEMPTS, CRM_RETRY_MAX_MS } from '../../functions/core/domain/crm-call.ts';
import { ANSWER_MARGIN_MS, AWS_CALL_MAX_MS, REFRESH_MAX_MS } from '../../functions/core/domain/timeline.ts';
import { functionSettings } from '../../manifest/functions.ts';

describe('crm-request timeout', () => {
  const config = loadConfig({ LOCAL_MASTER_KEY: Buffer.alloc(32).toString('base64') });
  const timeoutMs = functionSettings['crm-request'].timeoutSeconds * 1000;
  /** One CRM call: the rate budget's conditional write, then the call itself. */
  const call = AWS_CALL_MAX_MS + config.providerTimeoutMs;

  it('outlasts reading the connection, a call answered 401, a whole refresh, the event, and the retried call', () => {
    const worstCase =
      AWS_CALL_MAX_MS + call + AWS_CALL_MAX_MS + REFRESH_MAX_MS + AWS_CALL_MAX_MS + call + ANSWER_MARGIN_MS;
    expect(timeoutMs).toBeGreaterThanOrEqual(worstCase);
  });

  it('outlasts a GET retried to its last attempt after the refresh', () => {
    const retried = CRM_CALL_ATTEMPTS * call + (CRM_CALL_ATTEMPTS - 1) * CRM_RETRY_MAX_MS;
    const worstCase =
      AWS_CALL_MAX_MS +
      call +
      AWS_CALL_MAX_MS +
      REFRESH_MAX_MS +
      AWS_CALL_MAX_MS +
      retried +
      ANSWER_MARGIN_MS;
    expect(timeoutMs).toBeGreaterThanOrEqual(worstCase);
  });

  it('stays well under Lambda’s 15 minutes', () => {
    expect(timeoutMs).toBeLessThanOrEqual(300_000);
  });
});
