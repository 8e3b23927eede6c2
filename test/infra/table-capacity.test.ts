/**
 * The table's capacity mode (`tableCapacity`): on demand by default; provisioned with
 * target-tracking auto scaling on reads and writes of the table and of each index, and alarms on
 * throttling. Switching is an in-place update: only the billing differs between the two templates.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { tableDefinition } from '../../manifest/table.ts';
import {
  type Assembly,
  type Json,
  type Resource,
  loadAssembly,
  ofType,
  symbolize,
  synthesize,
} from './support.ts';

const TABLE = 'AWS::DynamoDB::Table';
const TARGET = 'AWS::ApplicationAutoScaling::ScalableTarget';
const POLICY = 'AWS::ApplicationAutoScaling::ScalingPolicy';
const indexNames = (tableDefinition('unused').GlobalSecondaryIndexes ?? []).map((i) => i.IndexName as string);

const onlyTable = (assembly: Assembly): [string, Resource] => {
  const found = ofType(assembly.statefulJson, TABLE);
  expect(found).toHaveLength(1);
  return found[0] as [string, Resource];
};

/** The table's properties without its billing: what must stay the same in both modes. */
const withoutBilling = (table: Resource): Json => {
  const {
    BillingMode: _mode,
    ProvisionedThroughput: _capacity,
    GlobalSecondaryIndexes,
    ...rest
  } = table.Properties as Json;
  return {
    ...rest,
    GlobalSecondaryIndexes: (GlobalSecondaryIndexes as Json[]).map(
      ({ ProvisionedThroughput: _indexCapacity, ...index }) => index,
    ),
  };
};

const throttleAlarmNames = [
  'crm-oauth-broker-table-write-throttles',
  'crm-oauth-broker-table-read-throttles',
];
const alarmsNamed = (assembly: Assembly, names: string[]) =>
  ofType(assembly.statelessJson, 'AWS::CloudWatch::Alarm').filter(([, a]) =>
    names.includes(a.Properties?.AlarmName as string),
  );

let onDemand: Assembly;
beforeAll(() => {
  onDemand = loadAssembly(inject('assemblyDir'));
});

describe('on demand (the default)', () => {
  it('bills per request, with no provisioned throughput and nothing to scale', () => {
    const stateful = Template.fromJSON(onDemand.statefulJson);
    stateful.hasResourceProperties(TABLE, {
      BillingMode: 'PAY_PER_REQUEST',
      ProvisionedThroughput: Match.absent(),
    });
    const [, table] = onlyTable(onDemand);
    for (const index of table.Properties?.GlobalSecondaryIndexes as Json[]) {
      expect(index.ProvisionedThroughput, index.IndexName as string).toBeUndefined();
    }
    stateful.resourceCountIs(TARGET, 0);
    stateful.resourceCountIs(POLICY, 0);
    Template.fromJSON(onDemand.statelessJson).resourceCountIs(TARGET, 0);
  });

  it('has no throttle alarms: an on-demand table scales by itself', () => {
    expect(alarmsNamed(onDemand, throttleAlarmNames)).toEqual([]);
  });
});

describe('provisioned', () => {
  let outdir: string;
  let assembly: Assembly;
  let stateful: Template;
  beforeAll(() => {
    outdir = mkdtempSync(join(tmpdir(), 'crm-oauth-broker-capacity-'));
    // Throws on any unacknowledged cdk-nag finding, like `npm run synth`.
    synthesize({
      outdir,
      bundle: false,
      context: {
        tableCapacity: 'provisioned',
        tableMinWriteCapacity: '150',
        tableMaxWriteCapacity: '2000',
        tableMinReadCapacity: '40',
        tableMaxReadCapacity: '600',
        tableCapacityTargetUtilization: '75',
      },
    });
    assembly = loadAssembly(outdir);
    stateful = Template.fromJSON(assembly.statefulJson);
  });
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  it('provisions the table and each index, starting at the minimum', () => {
    const [, table] = onlyTable(assembly);
    const p = table.Properties as Json;
    // Left out as CloudFormation's default, PROVISIONED (the CDK writes it only for PAY_PER_REQUEST).
    expect(p.BillingMode).toBeUndefined();
    expect(p.ProvisionedThroughput).toEqual({ ReadCapacityUnits: 40, WriteCapacityUnits: 150 });
    const indexes = p.GlobalSecondaryIndexes as Json[];
    expect(indexes.map((i) => i.IndexName).sort()).toEqual([...indexNames].sort());
    for (const index of indexes) {
      expect(index.ProvisionedThroughput, index.IndexName as string).toEqual({
        ReadCapacityUnits: 40,
        WriteCapacityUnits: 150,
      });
    }
  });

  it('is an in-place update of the same table: same logical id, keys, indexes and every other property', () => {
    const [onDemandId, onDemandTable] = onlyTable(onDemand);
    const [id, table] = onlyTable(assembly);
    expect(id).toBe(onDemandId);
    expect(table.Properties?.KeySchema).toEqual(onDemandTable.Properties?.KeySchema);
    expect(table.Properties?.AttributeDefinitions).toEqual(onDemandTable.Properties?.AttributeDefinitions);
    expect(withoutBilling(table)).toEqual(withoutBilling(onDemandTable));
    expect(table.DeletionPolicy).toBe('Retain');
    expect(table.UpdateReplacePolicy).toBe('Retain');
  });

  // [scalable dimension, resource id suffix, min, max, predefined metric]
  type Scaled = [string, string, number, number, string];
  const writes = (suffix: string, scope: string): Scaled => [
    `dynamodb:${scope}:WriteCapacityUnits`,
    suffix,
    150,
    2000,
    'DynamoDBWriteCapacityUtilization',
  ];
  const reads = (suffix: string, scope: string): Scaled => [
    `dynamodb:${scope}:ReadCapacityUnits`,
    suffix,
    40,
    600,
    'DynamoDBReadCapacityUtilization',
  ];
  const scaled: Scaled[] = [
    writes('', 'table'),
    reads('', 'table'),
    ...indexNames.flatMap((name) => [writes(`/index/${name}`, 'index'), reads(`/index/${name}`, 'index')]),
  ];

  it('scales reads and writes of the table and of each index, and nothing else', () => {
    stateful.resourceCountIs(TARGET, scaled.length);
    stateful.resourceCountIs(POLICY, scaled.length);
    expect(scaled).toHaveLength(2 + 2 * indexNames.length);
  });

  it.each(scaled)(
    '%s%s: between %d and %d units, tracking %s at the target',
    (dimension, suffix, min, max, metric) => {
      const [tableId] = onlyTable(assembly);
      const targets = ofType(assembly.statefulJson, TARGET).filter(
        ([, t]) =>
          t.Properties?.ScalableDimension === dimension &&
          symbolize(assembly, t.Properties?.ResourceId, assembly.statefulJson) === `table/Table.Ref${suffix}`,
      );
      expect(targets).toHaveLength(1);
      const [targetId, target] = targets[0] as [string, Resource];
      expect(target.Properties).toMatchObject({
        ServiceNamespace: 'dynamodb',
        MinCapacity: min,
        MaxCapacity: max,
      });
      // DynamoDB's own service-linked role: the stack creates no role for auto scaling.
      expect(target.Properties?.RoleARN).toMatch(
        /:role\/aws-service-role\/dynamodb\.application-autoscaling\./,
      );
      expect(JSON.stringify(target.Properties?.ResourceId)).toContain(tableId);
      const policies = ofType(assembly.statefulJson, POLICY).filter(
        ([, p]) => (p.Properties?.ScalingTargetId as { Ref?: string }).Ref === targetId,
      );
      expect(policies).toHaveLength(1);
      expect((policies[0] as [string, Resource])[1].Properties).toMatchObject({
        PolicyType: 'TargetTrackingScaling',
        TargetTrackingScalingPolicyConfiguration: {
          PredefinedMetricSpecification: { PredefinedMetricType: metric },
          TargetValue: 75,
        },
      });
    },
  );

  it('creates no IAM role or policy in the stateful stack for auto scaling', () => {
    expect(ofType(assembly.statefulJson, 'AWS::IAM::Role')).toEqual(
      ofType(onDemand.statefulJson, 'AWS::IAM::Role'),
    );
    expect(ofType(assembly.statefulJson, 'AWS::IAM::Policy')).toEqual(
      ofType(onDemand.statefulJson, 'AWS::IAM::Policy'),
    );
  });

  it.each([
    ['write', 'Write'],
    ['read', 'Read'],
  ])(
    'alarms on %s throttling of the table or an index lasting three 5-minute periods, to the alarm topic',
    (kind, Kind) => {
      const found = alarmsNamed(assembly, [`crm-oauth-broker-table-${kind}-throttles`]);
      expect(found).toHaveLength(1);
      const alarm = (found[0] as [string, Resource])[1].Properties as Json;
      expect(alarm).toMatchObject({
        Threshold: 1,
        EvaluationPeriods: 3,
        DatapointsToAlarm: 3,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
        AlarmActions: ['arn:aws:sns:us-east-1:111111111111:ops-alarms'],
        OKActions: ['arn:aws:sns:us-east-1:111111111111:ops-alarms'],
      });
      const metrics = alarm.Metrics as Json[];
      const [expression] = metrics.filter((m) => m.Expression);
      const stats = metrics.filter((m) => m.MetricStat).map((m) => symbolize(assembly, m.MetricStat) as Json);
      expect(expression?.Expression).toBe(`SUM([${stats.map((_, i) => `FILL(${kind}${i}, 0)`).join(', ')}])`);
      // The table and each index, by the table's name (from the stateful stack).
      expect(
        stats.map((s) => {
          const metric = s.Metric as { MetricName: string; Namespace: string; Dimensions: Json[] };
          expect(s).toMatchObject({ Period: 300, Stat: 'Sum' });
          expect(metric).toMatchObject({ Namespace: 'AWS/DynamoDB', MetricName: `${Kind}ThrottleEvents` });
          return Object.fromEntries(metric.Dimensions.map((d) => [d.Name, d.Value]));
        }),
      ).toEqual([
        { TableName: 'Table.Ref' },
        ...indexNames.map((name) => ({ TableName: 'Table.Ref', GlobalSecondaryIndexName: name })),
      ]);
      expect(alarm.AlarmDescription).toMatch(new RegExp(`tableMax${Kind}Capacity`));
      expect((alarm.AlarmDescription as string).length).toBeLessThanOrEqual(1024);
    },
  );

  it('changes nothing else in the stateless stack: the same resources plus the two alarms', () => {
    const types = (a: Assembly) =>
      Object.values(a.statelessJson.Resources as Record<string, Resource>)
        .map((r) => r.Type)
        .sort();
    const added = [...types(onDemand)];
    added.push('AWS::CloudWatch::Alarm', 'AWS::CloudWatch::Alarm');
    expect(types(assembly)).toEqual(added.sort());
  });
});
