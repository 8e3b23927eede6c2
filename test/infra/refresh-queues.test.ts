/**
 * The refresh queues on the synthesized template (infra/refresh-queues.ts,
 * docs/scale.md): one encrypted, TLS-only queue per CRM with its dead-letter
 * queue, an event source mapping to refresh-worker capped at the CRM's worker
 * cap with partial batch failures, alarms on queue age and dead letters, and a
 * dashboard row. The roles' statements are in least-privilege.test.ts.
 */
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { providerIds } from '../../manifest/functions.ts';
import {
  CLAIM_WINDOW_SECONDS,
  QUEUE_MAX_RECEIVE_COUNT,
  QUEUE_VISIBILITY_TIMEOUT_SECONDS,
} from '../../manifest/refresh-queues.ts';
import { QUEUE_AGE_ALARM_SECONDS } from '../../infra/refresh-queues.ts';
import { type Assembly, type Json, type Resource, loadAssembly, ofType, symbolize } from './support.ts';

let assembly: Assembly;
beforeAll(() => {
  assembly = loadAssembly(inject('assemblyDir'));
});

const queueNamed = (tag: string): [string, Json] => {
  const found = ofType(assembly.statelessJson, 'AWS::SQS::Queue').filter(([, q]) =>
    (q.Properties?.Tags as { Key: string; Value: string }[] | undefined)?.some((t) => t.Value === tag),
  );
  expect(found, tag).toHaveLength(1);
  const [id, queue] = found[0] as [string, Resource];
  return [id, queue.Properties as Json];
};

const alarmNamed = (name: string): Json => {
  const found = ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm').filter(
    ([, a]) => a.Properties?.AlarmName === name,
  );
  expect(found, name).toHaveLength(1);
  return (found[0] as [string, Resource])[1].Properties as Json;
};

describe.each(providerIds)('the %s refresh queue', (provider) => {
  it('is encrypted, keeps messages only as long as a claim, and hides one in work for 6x the worker timeout', () => {
    const [, queue] = queueNamed(`refresh-${provider}`);
    expect(queue.SqsManagedSseEnabled).toBe(true);
    expect(queue.VisibilityTimeout).toBe(QUEUE_VISIBILITY_TIMEOUT_SECONDS);
    expect(queue.MessageRetentionPeriod).toBe(CLAIM_WINDOW_SECONDS);
  });

  it(`dead-letters a message after ${QUEUE_MAX_RECEIVE_COUNT} receives to its own encrypted queue, kept 14 days`, () => {
    const [, queue] = queueNamed(`refresh-${provider}`);
    expect(symbolize(assembly, queue.RedrivePolicy)).toEqual({
      deadLetterTargetArn: `Queue[refresh-${provider}-dead-letters].Arn`,
      maxReceiveCount: QUEUE_MAX_RECEIVE_COUNT,
    });
    const [, deadLetters] = queueNamed(`refresh-${provider}-dead-letters`);
    expect(deadLetters.SqsManagedSseEnabled).toBe(true);
    expect(deadLetters.MessageRetentionPeriod).toBe(14 * 86_400);
  });

  it('refuses every request that is not over TLS, the queue and its dead letters alike', () => {
    for (const tag of [`refresh-${provider}`, `refresh-${provider}-dead-letters`]) {
      const [id] = queueNamed(tag);
      const policies = ofType(assembly.statelessJson, 'AWS::SQS::QueuePolicy').filter(([, p]) =>
        JSON.stringify(p.Properties?.Queues).includes(`"${id}"`),
      );
      expect(policies, tag).toHaveLength(1);
      const statements = ((policies[0] as [string, Resource])[1].Properties?.PolicyDocument as Json)
        .Statement as Json[];
      expect(statements).toContainEqual(
        expect.objectContaining({
          Effect: 'Deny',
          Action: 'sqs:*',
          Condition: { Bool: { 'aws:SecureTransport': 'false' } },
        }),
      );
    }
  });

  it("drives refresh-worker with at most the CRM's worker cap at once, in batches, reporting failures per message", () => {
    const mappings = ofType(assembly.statelessJson, 'AWS::Lambda::EventSourceMapping')
      .map(([, m]) => symbolize(assembly, m.Properties) as Json)
      .filter((m) => m.EventSourceArn === `Queue[refresh-${provider}].Arn`);
    expect(mappings).toEqual([
      {
        EventSourceArn: `Queue[refresh-${provider}].Arn`,
        FunctionName: 'Function[refresh-worker].Ref',
        // Refreshes at once = batch × invocations: Close 10 × 32 = 320, Copper and Capsule 2 × 2 = 4.
        BatchSize: { copper: 2, capsule: 2, close: 10 }[provider],
        ScalingConfig: { MaximumConcurrency: { copper: 2, capsule: 2, close: 32 }[provider] },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
      },
    ]);
  });

  it('alarms when its oldest message waits too long, and on any dead letter, naming what to do', () => {
    const age = alarmNamed(`crm-oauth-broker-refresh-queue-${provider}-age`);
    expect(age).toMatchObject({
      MetricName: 'ApproximateAgeOfOldestMessage',
      Namespace: 'AWS/SQS',
      Threshold: QUEUE_AGE_ALARM_SECONDS,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
    expect(symbolize(assembly, age.Dimensions)).toEqual([
      { Name: 'QueueName', Value: `Queue[refresh-${provider}].QueueName` },
    ]);
    expect(age.AlarmDescription).toMatch(/RefreshWorkerCap/);
    const dead = alarmNamed(`crm-oauth-broker-refresh-queue-${provider}-dead-letters`);
    expect(dead).toMatchObject({
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
    expect(symbolize(assembly, dead.Dimensions)).toEqual([
      { Name: 'QueueName', Value: `Queue[refresh-${provider}-dead-letters].QueueName` },
    ]);
    expect(dead.AlarmDescription).toMatch(/redrive/);
  });
});

describe('the dashboard', () => {
  it('shows each queue’s depth, the age of its oldest message and its dead letters', () => {
    const [, dashboard] = ofType(assembly.statelessJson, 'AWS::CloudWatch::Dashboard')[0] as [
      string,
      Resource,
    ];
    const body = JSON.stringify(symbolize(assembly, dashboard.Properties?.DashboardBody));
    for (const title of [
      'Refresh queue depth per CRM',
      'Refresh queue age of oldest message (s)',
      'Refresh dead letters per CRM',
      'Dispatched per run',
    ]) {
      expect(body).toContain(title);
    }
    for (const metric of [
      'ApproximateNumberOfMessagesVisible',
      'ApproximateNumberOfMessagesNotVisible',
      'ApproximateAgeOfOldestMessage',
    ]) {
      expect(body).toContain(metric);
    }
    for (const provider of providerIds) expect(body).toContain(`Queue[refresh-${provider}].QueueName`);
  });
});
