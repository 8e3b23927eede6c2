/**
 * cdk-nag's AwsSolutions checks run on every synthesis of the app, and the
 * only findings acknowledged are the ones security.md expects, each on the
 * one resource it concerns, with its reason.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createBrokerApp } from '../../infra/broker-app.ts';
import {
  type Assembly,
  TEST_SETTINGS,
  acknowledgements,
  cdkJsonContext,
  loadAssembly,
  ofType,
} from './support.ts';

let assembly: Assembly;
beforeAll(() => {
  assembly = loadAssembly(inject('assemblyDir'));
});

describe('cdk-nag', () => {
  it('acknowledges only the expected findings, each on its resource', () => {
    const found = [
      ...acknowledgements(assembly.statefulJson),
      ...acknowledgements(assembly.statelessJson),
    ].map(({ type, what, id }) => ({ type, what, id }));
    expect(found).toEqual(
      expect.arrayContaining([
        { type: 'AWS::SecretsManager::Secret', what: null, id: 'AwsSolutions-SMG4' },
        { type: 'AWS::ApiGatewayV2::Route', what: 'GET /connect/{provider}', id: 'AwsSolutions-APIG4' },
        { type: 'AWS::ApiGatewayV2::Route', what: 'GET /callback/{provider}', id: 'AwsSolutions-APIG4' },
        { type: 'AWS::ApiGatewayV2::Route', what: 'POST /callback/{provider}', id: 'AwsSolutions-APIG4' },
        { type: 'AWS::SQS::Queue', what: null, id: 'AwsSolutions-SQS3' },
      ]),
    );
    // The schedule's dead-letter queue and each CRM refresh queue's: dead-letter queues themselves (SQS3).
    expect(found.filter((f) => f.id === 'AwsSolutions-SQS3')).toHaveLength(4);
    expect(found).toHaveLength(8);
  });

  it('gives every acknowledgement a reason that says why', () => {
    for (const a of [
      ...acknowledgements(assembly.statefulJson),
      ...acknowledgements(assembly.statelessJson),
    ]) {
      expect(a.reason.length, a.id).toBeGreaterThan(80);
    }
  });

  it('never acknowledges the IAM-authorized route or any IAM or wildcard finding', () => {
    const all = [...acknowledgements(assembly.statefulJson), ...acknowledgements(assembly.statelessJson)];
    expect(all.filter((a) => a.what === 'POST /connections/{connectionId}/refresh')).toEqual([]);
    expect(all.filter((a) => /IAM4|IAM5|L1|DDB3|KMS5|APIG1/.test(a.id))).toEqual([]);
    expect(ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Route')).toHaveLength(4);
  });

  describe('runs on every synthesis', () => {
    let outdir: string;
    afterEach(() => rmSync(outdir, { recursive: true, force: true }));

    it('fails the synthesis on a new, unacknowledged finding', () => {
      outdir = mkdtempSync(join(tmpdir(), 'crm-oauth-broker-nag-'));
      const broker = createBrokerApp({
        outdir,
        context: {
          ...cdkJsonContext(),
          ...TEST_SETTINGS,
          account: '111111111111',
          region: 'us-east-1',
          'aws:cdk:bundling-stacks': [],
        },
      });
      // A queue without TLS enforcement or a dead-letter queue: AwsSolutions-SQS3 and SQS4.
      new sqs.Queue(broker.stateless, 'Careless', { encryption: sqs.QueueEncryption.SQS_MANAGED });
      let failure: Error | undefined;
      try {
        broker.app.synth();
      } catch (err) {
        failure = err as Error;
      }
      expect(failure).toBeDefined();
      // The findings are in the error itself or in the report it points to, depending on the CDK's output mode.
      const reportFile = join(outdir, 'validation-report.json');
      const text = `${failure?.message}\n${existsSync(reportFile) ? readFileSync(reportFile, 'utf8') : ''}`;
      expect(text).toContain('AwsSolutions-SQS4');
      expect(text).toContain('Stateless/Careless/Resource');
    });
  });

  it('the app that passed is the one the tests read', () => {
    expect(loadAssembly(assembly.dir).statelessJson).toEqual(assembly.statelessJson);
  });
});
