/**
 * The handlers' middleware (functions/adapters/lambda/middleware.ts): Powertools'
 * `injectLambdaContext` and `logMetrics` around the broker's error mapping. Each
 * invocation logs with its Lambda context and the `function` key, and the
 * metrics it recorded are flushed after success and after an error, with no
 * output at all when it recorded none.
 */
import type { Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InternalError, httpHandler, invokeHandler } from '../../functions/adapters/lambda/middleware.ts';
import { createMetrics } from '../../functions/adapters/lambda/metrics.ts';
import type { HttpEvent } from '../../functions/adapters/lambda/responses.ts';
import { ConnectionNotFound } from '../../functions/core/domain/errors.ts';

let out: string[] = [];
let err: string[] = [];
const realOut = process.stdout.write.bind(process.stdout);
const realErr = process.stderr.write.bind(process.stderr);

beforeEach(() => {
  out = [];
  err = [];
  delete process.env.POWERTOOLS_METRICS_DISABLED;
  process.stdout.write = ((chunk: unknown) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown) => (err.push(String(chunk)), true)) as typeof process.stderr.write;
});
afterEach(() => {
  process.stdout.write = realOut;
  process.stderr.write = realErr;
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
  vi.restoreAllMocks();
});

const json = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, any>);
const emf = () => json(out).filter((o) => o._aws);
/** Log lines, info on stdout and errors on stderr. */
const logs = () => json([...out, ...err]).filter((o) => !o._aws);

const context = (requestId: string) =>
  ({
    functionName: 'broker-token-fetch',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:broker-token-fetch',
    memoryLimitInMB: '256',
    awsRequestId: requestId,
    getRemainingTimeInMillis: () => 10_000,
  }) as unknown as Context;

const deps = () => ({
  logger: new Logger({ serviceName: 'test', logLevel: 'INFO' }),
  metrics: createMetrics({ POWERTOOLS_METRICS_NAMESPACE: 'CrmOAuthBroker/test' }),
});

describe('invokeHandler', () => {
  it('logs each invocation with its Lambda context and the function name', async () => {
    const d = deps();
    const handler = invokeHandler(d, 'token-fetch', async () => {
      d.logger.info('inside');
      return { ok: true };
    });
    await handler({}, context('req-1'));
    await handler({}, context('req-2'));
    expect(logs().map((l) => [l.message, l.function_request_id, l.function])).toEqual([
      ['inside', 'req-1', 'token-fetch'],
      ['inside', 'req-2', 'token-fetch'],
    ]);
    expect(logs()[0]).toMatchObject({ function_name: 'broker-token-fetch', cold_start: expect.any(Boolean) });
  });

  it('never logs the event, even with POWERTOOLS_LOGGER_LOG_EVENT set', async () => {
    vi.stubEnv('POWERTOOLS_LOGGER_LOG_EVENT', 'true');
    const d = deps();
    await invokeHandler(d, 'token-fetch', async () => ({ ok: true }))(
      { refreshToken: 'rt-secret' },
      context('r'),
    );
    vi.unstubAllEnvs();
    expect(out.join('')).not.toContain('rt-secret');
  });

  it('flushes the metrics recorded, after success', async () => {
    const d = deps();
    await invokeHandler(d, 'token-fetch', async () => {
      d.metrics.milliseconds('TokenFetchLatency', 12);
      return { ok: true };
    })({}, context('r'));
    expect(emf()).toHaveLength(1);
    expect(emf()[0]).toMatchObject({ TokenFetchLatency: 12 });
  });

  it('flushes them after an error too, with the error mapped as before', async () => {
    const d = deps();
    const handler = invokeHandler(d, 'token-fetch', async () => {
      d.metrics.count('TokensRefreshed');
      throw new Error('boom');
    });
    await expect(handler({}, context('r'))).rejects.toBeInstanceOf(InternalError);
    const docs = emf();
    expect(docs.find((o) => o.UnexpectedFailures === 1)).toMatchObject({ Function: 'token-fetch' });
    expect(docs.find((o) => o.TokensRefreshed === 1)).toBeDefined();
    expect(logs().find((l) => l.message === 'unexpected failure')).toMatchObject({ function: 'token-fetch' });

    // A typed error passes through as it is.
    const refused = invokeHandler(d, 'token-fetch', async () => {
      throw new ConnectionNotFound();
    });
    await expect(refused({}, context('r'))).rejects.toBeInstanceOf(ConnectionNotFound);
  });

  it('writes nothing, and warns nothing, when the invocation recorded no metric', async () => {
    const d = deps();
    const warn = vi.spyOn(console, 'warn');
    await invokeHandler(d, 'connections', async () => ({ ok: true }))({}, context('r'));
    await invokeHandler(d, 'connections', async () => {
      throw new ConnectionNotFound();
    })({}, context('r')).catch(() => undefined);
    expect(emf().filter((o) => !o.RequestsRefused)).toEqual([]);
    expect(out.join('')).not.toContain('No application metrics');
    expect(err).toEqual([]);
    expect(warn).not.toHaveBeenCalled();
  });
});

describe('httpHandler', () => {
  it('answers a 500 page for an unexpected error, and flushes the metrics recorded', async () => {
    const d = deps();
    const handler = httpHandler(d, 'callback', async () => {
      d.metrics.count('ConnectionsCreated');
      throw new Error('boom');
    });
    const page = await handler({} as HttpEvent, context('r'));
    expect(page.statusCode).toBe(500);
    expect(page.body).toContain('internal_error');
    expect(emf().find((o) => o.ConnectionsCreated === 1)).toBeDefined();
    expect(emf().find((o) => o.UnexpectedFailures === 1)).toMatchObject({ Function: 'callback' });
  });
});
