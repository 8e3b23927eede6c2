/**
 * The synthesized stacks: stateful resources retained and configured for
 * recovery, functions built with the shared defaults and exactly the settings
 * their code reads, the schedule bounded, and the operations surface (alarms,
 * dashboard, outputs) in place.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { REPO_ROOT } from '../../infra/broker-function.ts';
import { emfMetricNames } from '../../infra/observability.ts';
import { providerIds } from '../../functions/core/domain/providers.ts';
import {
  type FunctionName,
  functionNames,
  functionSettings,
  invokableFunctions,
} from '../../manifest/functions.ts';
import { tableDefinition } from '../../manifest/table.ts';
import {
  type Assembly,
  type Json,
  type Resource,
  functionResource,
  loadAssembly,
  ofType,
  symbolize,
} from './support.ts';

let assembly: Assembly;
beforeAll(() => {
  assembly = loadAssembly(inject('assemblyDir'));
});

const only = (template: Json, type: string): Resource => {
  const found = ofType(template, type);
  expect(found, type).toHaveLength(1);
  return (found[0] as [string, Resource])[1];
};

describe('stateful stack', () => {
  it('holds the table, the key, the secret and the bus, all retained on delete and replacement', () => {
    for (const type of [
      'AWS::DynamoDB::Table',
      'AWS::KMS::Key',
      'AWS::SecretsManager::Secret',
      'AWS::Events::EventBus',
    ]) {
      const r = only(assembly.statefulJson, type);
      expect(r.DeletionPolicy, type).toBe('Retain');
      expect(r.UpdateReplacePolicy, type).toBe('Retain');
    }
  });

  it('is termination-protected; the stateless stack holds no data resource', () => {
    const manifest = JSON.parse(readFileSync(join(assembly.dir, 'manifest.json'), 'utf8')) as {
      artifacts: Record<string, { properties?: { terminationProtection?: boolean } }>;
    };
    expect(manifest.artifacts.Stateful?.properties?.terminationProtection).toBe(true);
    for (const type of ['AWS::DynamoDB::Table', 'AWS::KMS::Key', 'AWS::SecretsManager::Secret']) {
      expect(ofType(assembly.statelessJson, type)).toHaveLength(0);
    }
  });

  it('builds the table from table.ts: on demand, PITR, TTL, customer key, deletion protection', () => {
    const table = only(assembly.statefulJson, 'AWS::DynamoDB::Table').Properties as Json;
    const definition = tableDefinition('unused');
    expect(table.BillingMode).toBe('PAY_PER_REQUEST');
    expect(table.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
    expect(table.TimeToLiveSpecification).toEqual({ AttributeName: 'ttl', Enabled: true });
    expect(table.DeletionProtectionEnabled).toBe(true);
    expect(symbolize(assembly, table.SSESpecification, assembly.statefulJson)).toEqual({
      KMSMasterKeyId: 'Key.Arn',
      SSEEnabled: true,
      SSEType: 'KMS',
    });
    const byName = <T extends { AttributeName?: string; IndexName?: string }>(list: T[]) =>
      [...list].sort((a, b) =>
        (a.AttributeName ?? a.IndexName ?? '').localeCompare(b.AttributeName ?? b.IndexName ?? ''),
      );
    expect(byName(table.AttributeDefinitions as [])).toEqual(byName(definition.AttributeDefinitions ?? []));
    expect(table.KeySchema).toEqual(definition.KeySchema);
    expect(byName(table.GlobalSecondaryIndexes as [])).toEqual(
      byName(definition.GlobalSecondaryIndexes ?? []),
    );
  });

  it('rotates the token key yearly and waits 30 days before any deletion', () => {
    const key = only(assembly.statefulJson, 'AWS::KMS::Key').Properties as Json;
    expect(key.EnableKeyRotation).toBe(true);
    expect(key.RotationPeriodInDays).toBe(365);
    expect(key.PendingWindowInDays).toBe(30);
  });

  it('keeps no client secret in the template: the secret starts with empty entries, one per CRM', () => {
    const secret = only(assembly.statefulJson, 'AWS::SecretsManager::Secret').Properties as Json;
    expect(secret.SecretString).toBeUndefined();
    const generated = secret.GenerateSecretString as { SecretStringTemplate: string };
    expect(JSON.parse(generated.SecretStringTemplate)).toEqual(
      Object.fromEntries(providerIds.map((p) => [p, ''])),
    );
  });

  it('names the event bus after the broker', () => {
    expect(only(assembly.statefulJson, 'AWS::Events::EventBus').Properties?.Name).toBe('crm-oauth-broker');
  });
});

describe('functions', () => {
  const fn = (name: FunctionName) =>
    functionResource(assembly.statelessJson, 'AWS::Lambda::Function', name)[1];

  it('deploys exactly the functions of the route table', () => {
    const names = ofType(assembly.statelessJson, 'AWS::Lambda::Function').map(
      ([, f]) => f.Properties?.FunctionName,
    );
    expect(names.sort()).toEqual(functionNames.map((n) => `crm-oauth-broker-${n}`).sort());
  });

  it.each(functionNames)(
    '%s: newest Node.js runtime, arm64, its timeout and memory, JSON logs to its own group',
    (name) => {
      const p = fn(name).Properties as Json;
      expect(p.Runtime).toBe('nodejs24.x');
      expect(p.Architectures).toEqual(['arm64']);
      expect(p.Handler).toBe('index.handler');
      expect(p.Timeout).toBe(functionSettings[name].timeoutSeconds);
      expect(p.MemorySize).toBe(functionSettings[name].memoryMb);
      expect(p.Description).toBe(functionSettings[name].description);
      expect(symbolize(assembly, p.LoggingConfig)).toEqual({
        LogFormat: 'JSON',
        LogGroup: `LogGroup[${name}].Ref`,
        ApplicationLogLevel: 'INFO',
        SystemLogLevel: 'WARN',
      });
      const [, group] = functionResource(assembly.statelessJson, 'AWS::Logs::LogGroup', name);
      expect(group.Properties?.RetentionInDays).toBe(30);
    },
  );

  const common = {
    PUBLIC_BASE_URL: 'Api.ApiEndpoint',
    RETURN_TO_ORIGINS: 'https://app.example.com,https://admin.example.com',
    COPPER_CLIENT_ID: 'copper-test-client',
    CAPSULE_CLIENT_ID: 'capsule-test-client',
    CLOSE_CLIENT_ID: 'oa2client_close_test',
    REFRESH_INTERVAL_SECONDS: '60',
    POWERTOOLS_SERVICE_NAME: 'crm-oauth-broker',
    POWERTOOLS_METRICS_NAMESPACE: 'CrmOAuthBroker/crm-oauth-broker',
    NODE_OPTIONS: '--enable-source-maps',
    TABLE_NAME: 'Table.Ref',
    // config.ts refuses to start without it, even where the function never calls KMS.
    KMS_KEY_ID: 'Key.Arn',
  };
  const withSecretsAndEvents = {
    ...common,
    CLIENT_SECRETS_ARN: 'Secret.Ref',
    EVENT_BUS_NAME: 'EventBus.Ref',
  };
  // The functions that refresh: `connection.refreshed` is off unless the deployment turns it on.
  const refreshing = { ...withSecretsAndEvents, PUBLISH_REFRESHED_EVENTS: 'false' };
  const expectedEnv: Record<FunctionName, Record<string, string>> = {
    'connect-session': common,
    authorize: common,
    callback: withSecretsAndEvents,
    'token-fetch': refreshing,
    connections: withSecretsAndEvents,
    refresh: refreshing,
    'crm-request': refreshing,
    // The dispatcher: the table and its CRM queues; no secret, no bus (it calls no CRM, publishes nothing).
    'refresh-scheduled': {
      ...common,
      REFRESH_QUEUE_URL_COPPER: 'Queue[refresh-copper].Ref',
      REFRESH_QUEUE_URL_CAPSULE: 'Queue[refresh-capsule].Ref',
      REFRESH_QUEUE_URL_CLOSE: 'Queue[refresh-close].Ref',
    },
    'refresh-worker': refreshing,
  };

  it.each(functionNames)('%s: exactly the settings its code reads, and no secret value', (name) => {
    const env = (fn(name).Properties?.Environment as { Variables: Json }).Variables;
    expect(symbolize(assembly, env)).toEqual(expectedEnv[name]);
    for (const key of Object.keys(env)) expect(key).not.toMatch(/_CLIENT_SECRET$|_MASTER_KEY$/);
  });
});

describe('schedule', () => {
  it('invokes refresh-scheduled at the configured rate with bounded retries and a dead-letter queue', () => {
    const schedule = only(assembly.statelessJson, 'AWS::Scheduler::Schedule').Properties as Json;
    expect(schedule.ScheduleExpression).toBe('rate(1 minute)');
    expect(schedule.State).toBe('ENABLED');
    expect(schedule.FlexibleTimeWindow).toEqual({ Mode: 'OFF' });
    const target = symbolize(assembly, schedule.Target) as Json;
    expect(target.Arn).toBe('Function[refresh-scheduled].Arn');
    expect(target.RetryPolicy).toEqual({ MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 60 });
    expect(target.DeadLetterConfig).toEqual({ Arn: 'Queue.Arn' });
  });

  it('sends failed asynchronous runs to the same queue instead of retrying them', () => {
    const config = symbolize(
      assembly,
      only(assembly.statelessJson, 'AWS::Lambda::EventInvokeConfig').Properties,
    );
    expect(config).toMatchObject({
      FunctionName: 'Function[refresh-scheduled].Ref',
      MaximumRetryAttempts: 0,
      MaximumEventAgeInSeconds: 60,
      DestinationConfig: { OnFailure: { Destination: 'Queue.Arn' } },
    });
  });

  it('keeps dead letters encrypted, over TLS only, for 14 days', () => {
    // The schedule's own dead-letter queue: the one queue not named for a refresh queue.
    const queues = ofType(assembly.statelessJson, 'AWS::SQS::Queue').filter(([, q]) => !q.Properties?.Tags);
    expect(queues).toHaveLength(1);
    const queue = (queues[0] as [string, Resource])[1].Properties as Json;
    expect(queue.SqsManagedSseEnabled).toBe(true);
    expect(queue.MessageRetentionPeriod).toBe(14 * 86_400);
    assembly.stateless.hasResourceProperties('AWS::SQS::QueuePolicy', {
      PolicyDocument: {
        Statement: [
          { Effect: 'Deny', Action: 'sqs:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } },
        ],
      },
    });
  });
});

describe('operations', () => {
  const alarmNames = () =>
    ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm').map(
      ([, a]) => a.Properties?.AlarmName as string,
    );

  const alarmNamed = (name: string): Json => {
    const found = ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm').filter(
      ([, a]) => a.Properties?.AlarmName === name,
    );
    expect(found, name).toHaveLength(1);
    return (found[0] as [string, Resource])[1].Properties as Json;
  };

  it('alarms on function failures, refresh failures, re-authorizations, throttles, dead letters and a stopped schedule', () => {
    expect(alarmNames().sort()).toEqual(
      [
        ...functionNames.map((n) => `crm-oauth-broker-function-${n}-failures`),
        'crm-oauth-broker-token-refresh-failures',
        'crm-oauth-broker-refresh-result-lost',
        'crm-oauth-broker-client-credentials-rejected',
        'crm-oauth-broker-token-requests-rejected',
        'crm-oauth-broker-refresh-broker-errors',
        'crm-oauth-broker-refresh-outcomes-unknown',
        'crm-oauth-broker-connections-need-reauth',
        'crm-oauth-broker-lambda-throttles',
        'crm-oauth-broker-api-5xx',
        'crm-oauth-broker-refresh-dead-letters',
        'crm-oauth-broker-scheduled-refresh-stopped',
        ...providerIds.flatMap((p) => [
          `crm-oauth-broker-refresh-queue-${p}-age`,
          `crm-oauth-broker-refresh-queue-${p}-dead-letters`,
        ]),
        'crm-oauth-broker-refresh-dispatch-failed',
      ].sort(),
    );
  });

  it('notifies the configured topic on alarm and on recovery', () => {
    for (const [, alarm] of ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm')) {
      expect(alarm.Properties?.AlarmActions).toEqual(['arn:aws:sns:us-east-1:111111111111:ops-alarms']);
      expect(alarm.Properties?.OKActions).toEqual(['arn:aws:sns:us-east-1:111111111111:ops-alarms']);
    }
  });

  // [alarm name, EMF metric, threshold, period in seconds, what the description must tell the operator]
  const countAlarms: [string, string, number, number, RegExp][] = [
    ['crm-oauth-broker-refresh-result-lost', 'RefreshResultsLost', 1, 300, /DynamoDB/],
    ['crm-oauth-broker-token-refresh-failures', 'RefreshFailures', 10, 900, /connections stay active/],
    ['crm-oauth-broker-connections-need-reauth', 'ConnectionsNeedingReauth', 10, 3600, /credential or scope/],
    [
      'crm-oauth-broker-client-credentials-rejected',
      'ClientCredentialsRejected',
      1,
      300,
      /client secret in Secrets Manager.*no customer needs to reconnect/,
    ],
    [
      'crm-oauth-broker-token-requests-rejected',
      'TokenRequestsRejected',
      1,
      900,
      /broker bug or a change at the CRM/,
    ],
    ['crm-oauth-broker-refresh-broker-errors', 'RefreshBrokerErrors', 1, 900, /will not heal by itself/],
    ['crm-oauth-broker-refresh-outcomes-unknown', 'RefreshOutcomesUnknown', 5, 3600, /not retried/],
  ];

  it.each(countAlarms)(
    '%s: Sum of %s >= %d over %d s, one period, quiet when no data, to the alarm topic',
    (name, metricName, threshold, period, tells) => {
      const alarm = alarmNamed(name);
      expect(alarm).toMatchObject({
        Namespace: 'CrmOAuthBroker/crm-oauth-broker',
        MetricName: metricName,
        Dimensions: [{ Name: 'service', Value: 'crm-oauth-broker' }],
        Statistic: 'Sum',
        Period: period,
        Threshold: threshold,
        EvaluationPeriods: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
        AlarmActions: ['arn:aws:sns:us-east-1:111111111111:ops-alarms'],
        OKActions: ['arn:aws:sns:us-east-1:111111111111:ops-alarms'],
      });
      expect(alarm.AlarmDescription).toMatch(tells);
      // CloudWatch's limit on alarm descriptions.
      expect((alarm.AlarmDescription as string).length).toBeLessThanOrEqual(1024);
    },
  );

  it('counts a function failure as Lambda errors minus typed refusals, or a logged unexpected failure', () => {
    const [, alarm] = ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm').find(
      ([, a]) => a.Properties?.AlarmName === 'crm-oauth-broker-function-token-fetch-failures',
    ) as [string, Resource];
    const metrics = alarm.Properties?.Metrics as { Expression?: string; MetricStat?: { Metric: Json } }[];
    expect(metrics.find((m) => m.Expression)?.Expression).toMatch(
      /^MAX\(\[FILL\(errors\d, 0\) - FILL\(refused\d, 0\), FILL\(unexpected\d, 0\)\]\)$/,
    );
    const stats = metrics.flatMap((m) => (m.MetricStat ? [symbolize(assembly, m.MetricStat.Metric)] : []));
    expect(stats).toContainEqual({
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: 'Function[token-fetch].Ref' }],
    });
    expect(stats).toContainEqual({
      Namespace: 'CrmOAuthBroker/crm-oauth-broker',
      MetricName: 'RequestsRefused',
      // Powertools' EMF `service` dimension, plus the per-function one.
      Dimensions: expect.arrayContaining([
        { Name: 'Function', Value: 'token-fetch' },
        { Name: 'service', Value: 'crm-oauth-broker' },
      ]),
    });
  });

  it('has a dashboard with connections by state, refreshes, failures and token-fetch latency', () => {
    const body = JSON.stringify(
      symbolize(
        assembly,
        only(assembly.statelessJson, 'AWS::CloudWatch::Dashboard').Properties?.DashboardBody,
      ),
    );
    for (const title of [
      'Connections by state: changes per hour',
      'Refreshes',
      'Refresh failures',
      'token-fetch latency',
      'Failures needing an operator (each one alarms)',
      'Grant revocations at the CRM per hour',
      'Function failures (not typed refusals)',
      'Throttles and dead letters',
    ]) {
      expect(body).toContain(title);
    }
    expect(body).toContain('Function[token-fetch].Ref');
  });

  it('shows every count metric the code publishes on the dashboard (functions/core/domain/metric-names.ts)', () => {
    const code = readFileSync(join(REPO_ROOT, 'functions/core/domain/metric-names.ts'), 'utf8');
    const countMetric = /export type CountMetric =([^;]*);/.exec(code)?.[1] ?? '';
    const published = [...countMetric.matchAll(/\|\s*'([A-Za-z]+)'/g)].map((m) => m[1] as string);
    expect(published).toContain('ClientCredentialsRejected');
    const body = JSON.stringify(
      only(assembly.statelessJson, 'AWS::CloudWatch::Dashboard').Properties?.DashboardBody,
    );
    for (const name of published) {
      expect(emfMetricNames as readonly string[], name).toContain(name);
      expect(body, name).toContain(`\\"${name}\\"`);
    }
  });

  it('reads the EMF metrics the functions publish: no log metric filters, the service dimension on each', () => {
    expect(ofType(assembly.statelessJson, 'AWS::Logs::MetricFilter')).toEqual([]);
    const alarms = ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm').map(
      ([, a]) => a.Properties ?? {},
    );
    const own = JSON.stringify(alarms)
      .match(/"MetricName":"[A-Za-z]+"/g)
      ?.map((m) => m.slice('"MetricName":"'.length, -1))
      .filter((n) => (emfMetricNames as readonly string[]).includes(n));
    expect(own?.length).toBeGreaterThan(3);
    for (const alarm of alarms) {
      const metrics = [
        alarm,
        ...((alarm.Metrics as Json[] | undefined) ?? []).map((m: any) => m.MetricStat?.Metric ?? {}),
      ];
      for (const m of metrics as any[]) {
        if (!(emfMetricNames as readonly string[]).includes(m.MetricName)) continue;
        expect(m.Namespace).toMatch(/^CrmOAuthBroker\//);
        expect((m.Dimensions as { Name: string }[]).map((d) => d.Name)).toContain('service');
      }
    }
  });

  it('every metric it reads is one the code publishes (functions/core/domain/metric-names.ts)', () => {
    const code = readFileSync(join(REPO_ROOT, 'functions/core/domain/metric-names.ts'), 'utf8');
    for (const name of emfMetricNames) expect(code, name).toContain(`'${name}'`);
  });

  it('outputs the API URL, the callback URL of each CRM and the invokable functions', () => {
    const outputs = symbolize(assembly, assembly.statelessJson.Outputs) as Record<string, { Value: string }>;
    expect(outputs.ApiUrl?.Value).toBe('Api.ApiEndpoint');
    for (const p of providerIds) {
      const key = `CallbackUrl${p[0]?.toUpperCase()}${p.slice(1)}`;
      expect(outputs[key]?.Value).toBe(`Api.ApiEndpoint/callback/${p}`);
    }
    const pascal = (n: string) => n.replace(/(^|-)([a-z])/g, (_m, _d, c: string) => c.toUpperCase());
    for (const name of invokableFunctions) {
      expect(outputs[`${pascal(name)}FunctionName`]?.Value).toBe(`Function[${name}].Ref`);
      expect(outputs[`${pascal(name)}FunctionArn`]?.Value).toBe(`Function[${name}].Arn`);
    }
    for (const name of ['token-fetch', 'connect-session', 'connections'] as const) {
      expect(invokableFunctions).toContain(name);
    }
  });
});
