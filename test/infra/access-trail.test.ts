/**
 * The token-fetch access trail (`tokenFetchAccessTrail`): absent by default;
 * when switched on, one CloudTrail trail in the stateful stack that records
 * the invocations of token-fetch and nothing else, into a private, encrypted,
 * TLS-only, versioned bucket whose log files expire, with cdk-nag still clean.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { NONCURRENT_VERSION_DAYS } from '../../infra/access-trail.ts';
import {
  ACCOUNT,
  type Assembly,
  type Json,
  REGION,
  type Resource,
  type Statement,
  acknowledgements,
  functionResource,
  loadAssembly,
  ofType,
  symbolize,
  synthesize,
} from './support.ts';

const TRAIL = 'AWS::CloudTrail::Trail';
const BUCKET = 'AWS::S3::Bucket';

const only = (template: Json, type: string): [string, Resource] => {
  const found = ofType(template, type);
  expect(found, type).toHaveLength(1);
  return found[0] as [string, Resource];
};

describe('off by default', () => {
  let assembly: Assembly;
  beforeAll(() => {
    assembly = loadAssembly(inject('assemblyDir'));
  });

  it('has no trail, no bucket and no bucket output in either stack', () => {
    for (const template of [assembly.statefulJson, assembly.statelessJson]) {
      expect(ofType(template, TRAIL)).toEqual([]);
      expect(ofType(template, BUCKET)).toEqual([]);
    }
    expect(Object.keys(assembly.statefulJson.Outputs as Json)).not.toContain(
      'TokenFetchAccessTrailBucketName',
    );
  });
});

describe('switched on', () => {
  // The functions need no bundling for this: the trail names token-fetch by its physical name.
  let outdir: string;
  let assembly: Assembly;
  beforeAll(() => {
    outdir = mkdtempSync(join(tmpdir(), 'crm-oauth-broker-trail-'));
    // Throws on any unacknowledged cdk-nag finding, like `npm run synth`.
    synthesize({
      outdir,
      bundle: false,
      context: { tokenFetchAccessTrail: 'true', tokenFetchAccessTrailRetentionDays: '90' },
    });
    assembly = loadAssembly(outdir);
  });
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  const trail = () => only(assembly.statefulJson, TRAIL)[1];
  const bucket = () => only(assembly.statefulJson, BUCKET);

  it('adds exactly one trail, in the stateful stack, logging to its own bucket there', () => {
    expect(ofType(assembly.statelessJson, TRAIL)).toEqual([]);
    expect(ofType(assembly.statelessJson, BUCKET)).toEqual([]);
    const [bucketId] = bucket();
    expect(trail().Properties?.S3BucketName).toEqual({ Ref: bucketId });
    expect(trail().Properties?.TrailName).toBe('crm-oauth-broker-token-fetch-access');
    expect(trail().Properties?.IsLogging).toBe(true);
  });

  it('records data events of the token-fetch function only, by its exact ARN', () => {
    const [, fn] = functionResource(assembly.statelessJson, 'AWS::Lambda::Function', 'token-fetch');
    const arn = `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${fn.Properties?.FunctionName as string}`;
    expect(trail().Properties?.AdvancedEventSelectors).toEqual([
      {
        Name: 'Invocations of crm-oauth-broker-token-fetch only',
        FieldSelectors: [
          { Field: 'eventCategory', Equals: ['Data'] },
          { Field: 'resources.type', Equals: ['AWS::Lambda::Function'] },
          { Field: 'resources.ARN', Equals: [arn] },
        ],
      },
    ]);
  });

  it('records no management events, no global service events, in this region only, with file validation', () => {
    const p = trail().Properties as Json;
    expect(p.EventSelectors).toBeUndefined();
    expect(JSON.stringify(p.AdvancedEventSelectors)).not.toContain('Management');
    expect(p.IncludeGlobalServiceEvents).toBe(false);
    expect(p.IsMultiRegionTrail).toBe(false);
    expect(p.EnableLogFileValidation).toBe(true);
    expect(p.InsightSelectors).toBeUndefined();
    expect(p.CloudWatchLogsLogGroupArn).toBeUndefined();
  });

  it('keeps the bucket encrypted, private, versioned, expiring after the retention setting, and retained', () => {
    const [, b] = bucket();
    const p = b.Properties as Json;
    expect(p.BucketEncryption).toEqual({
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
    });
    expect(p.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    expect(p.OwnershipControls).toEqual({ Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
    expect(p.VersioningConfiguration).toEqual({ Status: 'Enabled' });
    expect((p.LifecycleConfiguration as { Rules: Json[] }).Rules).toEqual([
      {
        Id: 'ExpireLogFiles',
        Status: 'Enabled',
        ExpirationInDays: 90,
        NoncurrentVersionExpiration: { NoncurrentDays: NONCURRENT_VERSION_DAYS },
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
      },
      { Id: 'RemoveExpiredDeleteMarkers', Status: 'Enabled', ExpiredObjectDeleteMarker: true },
    ]);
    expect(b.DeletionPolicy).toBe('Retain');
    expect(b.UpdateReplacePolicy).toBe('Retain');
    // The trail itself goes when the setting is switched off, so its charges stop.
    expect(trail().DeletionPolicy).toBe('Delete');
  });

  it('refuses plain HTTP and lets only this trail write, after the policy exists', () => {
    const [policyId, policy] = only(assembly.statefulJson, 'AWS::S3::BucketPolicy');
    const statements = (
      (policy.Properties?.PolicyDocument as { Statement: Json[] }).Statement.map((s) =>
        symbolize(assembly, s, assembly.statefulJson),
      ) as Statement[]
    ).sort((a, b) => (a.Sid ?? '').localeCompare(b.Sid ?? ''));
    const trailArn = `arn:aws:cloudtrail:${REGION}:${ACCOUNT}:trail/crm-oauth-broker-token-fetch-access`;
    expect(statements).toEqual([
      {
        Effect: 'Deny',
        Principal: { AWS: '*' },
        Action: 's3:*',
        Resource: ['Bucket.Arn', 'Bucket.Arn/*'],
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      },
      {
        Sid: 'TrailChecksBucketAcl',
        Effect: 'Allow',
        Principal: { Service: 'cloudtrail.amazonaws.com' },
        Action: 's3:GetBucketAcl',
        Resource: 'Bucket.Arn',
        Condition: { StringEquals: { 'aws:SourceArn': trailArn } },
      },
      {
        Sid: 'TrailWritesLogFiles',
        Effect: 'Allow',
        Principal: { Service: 'cloudtrail.amazonaws.com' },
        Action: 's3:PutObject',
        Resource: `Bucket.Arn/AWSLogs/${ACCOUNT}/*`,
        Condition: {
          StringEquals: { 's3:x-amz-acl': 'bucket-owner-full-control', 'aws:SourceArn': trailArn },
        },
      },
    ]);
    expect(trail().DependsOn).toContain(policyId);
  });

  it('passes cdk-nag with one more acknowledgement: server access logs of the trail bucket, explained', () => {
    const found = [...acknowledgements(assembly.statefulJson), ...acknowledgements(assembly.statelessJson)];
    const base = loadAssembly(inject('assemblyDir'));
    const before = [...acknowledgements(base.statefulJson), ...acknowledgements(base.statelessJson)];
    const added = found.filter(
      (a) => !before.some((b) => b.type === a.type && b.id === a.id && b.what === a.what),
    );
    expect(added.map(({ type, what, id }) => ({ type, what, id }))).toEqual([
      { type: BUCKET, what: null, id: 'AwsSolutions-S1' },
    ]);
    expect(found).toHaveLength(before.length + 1);
    expect(added[0]?.reason).toMatch(/only this trail may write/);
    expect(added[0]?.reason.length).toBeGreaterThan(80);
  });

  it('outputs the bucket name', () => {
    const [bucketId] = bucket();
    expect(
      (assembly.statefulJson.Outputs as Record<string, Json>).TokenFetchAccessTrailBucketName?.Value,
    ).toEqual({
      Ref: bucketId,
    });
  });
});
