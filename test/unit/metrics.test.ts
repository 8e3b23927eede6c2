import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMetrics } from '../../functions/adapters/lambda/metrics.ts';

let lines: string[] = [];
let errors: string[] = [];
const realWrite = process.stdout.write.bind(process.stdout);
const realError = process.stderr.write.bind(process.stderr);

beforeEach(() => {
  lines = [];
  errors = [];
  delete process.env.POWERTOOLS_METRICS_DISABLED;
  process.stdout.write = ((chunk: unknown) => (
    lines.push(String(chunk)),
    true
  )) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown) => (
    errors.push(String(chunk)),
    true
  )) as typeof process.stderr.write;
});
afterEach(() => {
  process.stdout.write = realWrite;
  process.stderr.write = realError;
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
});

const emf = () => lines.map((l) => JSON.parse(l)).filter((o) => o._aws);

describe('EMF metrics', () => {
  it('writes what an invocation recorded, in the configured namespace, as CloudWatch EMF', () => {
    const metrics = createMetrics({
      POWERTOOLS_METRICS_NAMESPACE: 'CrmOAuthBroker/test',
      POWERTOOLS_SERVICE_NAME: 'svc',
    });
    metrics.count('TokensRefreshed');
    metrics.milliseconds('TokenFetchLatency', 12);
    metrics.flush();
    const [doc] = emf();
    expect(doc._aws.CloudWatchMetrics[0].Namespace).toBe('CrmOAuthBroker/test');
    expect(doc.TokensRefreshed).toBe(1);
    expect(doc.TokenFetchLatency).toBe(12);
    expect(doc.service).toBe('svc');
  });

  it('publishes per-function outcomes with a Function dimension', () => {
    const metrics = createMetrics({});
    metrics.perFunction('RequestsRefused', 'token-fetch');
    const [doc] = emf();
    expect(doc.RequestsRefused).toBe(1);
    expect(doc.Function).toBe('token-fetch');
    expect(doc._aws.CloudWatchMetrics[0].Dimensions[0]).toContain('Function');
  });

  it('writes nothing, and warns nothing, when nothing was recorded', () => {
    const metrics = createMetrics({});
    metrics.flush();
    // What `logMetrics` calls after every invocation.
    metrics.powertools.publishStoredMetrics();
    expect(lines).toEqual([]);
    expect(errors).toEqual([]);
  });
});
