/**
 * Shared by the template tests: synthesizing the app the way `cdk synth` does
 * (cdk.json's feature flags, cdk-nag registered), loading the synthesized
 * templates, and reading IAM policies with references turned into readable
 * names (`Table.Arn`, `LogGroup[token-fetch].Arn`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { type BrokerApp, createBrokerApp } from '../../infra/broker-app.ts';
import { FUNCTION_TAG, REPO_ROOT } from '../../infra/broker-function.ts';
import { QUEUE_TAG } from '../../infra/refresh-queues.ts';
import type { FunctionName } from '../../manifest/functions.ts';

export const ACCOUNT = '111111111111';
export const REGION = 'us-east-1';

/** The settings a real deployment would pass with `-c`. */
export const TEST_SETTINGS: Record<string, string> = {
  copperClientId: 'copper-test-client',
  capsuleClientId: 'capsule-test-client',
  closeClientId: 'oa2client_close_test',
  returnToOrigins: 'https://app.example.com,https://admin.example.com',
  alarmTopicArn: `arn:aws:sns:${REGION}:${ACCOUNT}:ops-alarms`,
};

export const cdkJsonContext = (): Record<string, unknown> =>
  (JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> })
    .context;

export interface SynthOptions {
  outdir: string;
  /** Bundle the functions with esbuild (slow-ish); otherwise assets are placeholders. */
  bundle: boolean;
  context?: Record<string, unknown>;
}

/** Synthesizes like `npm run synth`; throws when cdk-nag (or CloudFormation validation) reports anything. */
export function synthesize(options: SynthOptions): BrokerApp {
  const broker = createBrokerApp({
    outdir: options.outdir,
    context: {
      ...cdkJsonContext(),
      account: ACCOUNT,
      region: REGION,
      ...TEST_SETTINGS,
      ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }),
      ...options.context,
    },
  });
  broker.app.synth();
  return broker;
}

export type Json = Record<string, unknown>;

export interface Assembly {
  dir: string;
  stateful: Template;
  stateless: Template;
  statefulJson: Json;
  statelessJson: Json;
}

export function loadAssembly(dir: string): Assembly {
  const read = (name: string) => JSON.parse(readFileSync(join(dir, `${name}.template.json`), 'utf8')) as Json;
  const statefulJson = read('Stateful');
  const statelessJson = read('Stateless');
  return {
    dir,
    stateful: Template.fromJSON(statefulJson),
    stateless: Template.fromJSON(statelessJson),
    statefulJson,
    statelessJson,
  };
}

export interface Resource {
  Type: string;
  Properties?: Json;
  Metadata?: Json;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
  DependsOn?: string[];
}

export const resources = (template: Json): Record<string, Resource> =>
  template.Resources as Record<string, Resource>;

export const ofType = (template: Json, type: string): [string, Resource][] =>
  Object.entries(resources(template)).filter(([, r]) => r.Type === type);

const tagOf = (resource: Resource): string | undefined => {
  const tags = resource.Properties?.Tags;
  if (!Array.isArray(tags)) return undefined;
  const named = tags as { Key: string; Value: string }[];
  // A refresh queue is named by what it is for (`refresh-close`), as a function's resources by their function.
  return (named.find((t) => t.Key === FUNCTION_TAG) ?? named.find((t) => t.Key === QUEUE_TAG))?.Value;
};

/** The logical id of `type` tagged with broker function `name`. */
export function functionResource(template: Json, type: string, name: FunctionName): [string, Resource] {
  const found = ofType(template, type).filter(([, r]) => tagOf(r) === name);
  if (found.length !== 1) throw new Error(`expected one ${type} for ${name}, found ${found.length}`);
  return found[0] as [string, Resource];
}

/**
 * Replaces CloudFormation references with readable names: a resource is named
 * by its type (`Table`, `Key`, `Secret`, `EventBus`, `Queue`, ...) plus the
 * broker function it belongs to, and cross-stack outputs are followed back to
 * the stateful stack's resources.
 */
export function symbolize(
  assembly: Assembly,
  value: unknown,
  template: Json = assembly.statelessJson,
): unknown {
  const nameOf = (t: Json, id: string): string => {
    const r = resources(t)[id];
    if (!r) return id;
    const short = r.Type.split('::')[2] ?? r.Type;
    const tag = tagOf(r);
    return tag ? `${short}[${tag}]` : short;
  };
  const walk = (v: unknown, t: Json): unknown => {
    if (Array.isArray(v)) return v.map((x) => walk(x, t));
    if (v === null || typeof v !== 'object') return v;
    const o = v as Json;
    if ('Fn::GetStackOutput' in o) {
      const ref = o['Fn::GetStackOutput'] as { OutputName: string };
      const outputs = assembly.statefulJson.Outputs as Record<string, { Value: unknown }>;
      const output = outputs[ref.OutputName];
      if (!output) throw new Error(`stateful stack has no output ${ref.OutputName}`);
      return walk(output.Value, assembly.statefulJson);
    }
    if ('Fn::GetAtt' in o) {
      const [id, attr] = o['Fn::GetAtt'] as [string, string];
      return `${nameOf(t, id)}.${attr}`;
    }
    if ('Ref' in o) {
      const id = o.Ref as string;
      return id.startsWith('AWS::') ? id : `${nameOf(t, id)}.Ref`;
    }
    if ('Fn::Join' in o) {
      const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
      return parts.map((p) => walk(p, t)).join(sep);
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, walk(x, t)]));
  };
  return walk(value, template);
}

export interface Acknowledged {
  type: string;
  /** The route key of an API route; null for other resources. */
  what: unknown;
  id: string;
  reason: string;
}

/** The cdk-nag findings acknowledged in a template (`writeSuppressionsToCloudFormation`), per resource. */
export function acknowledgements(template: Json): Acknowledged[] {
  return Object.values(resources(template))
    .filter((r) => r.Metadata?.cdk_nag)
    .flatMap((r) =>
      (r.Metadata?.cdk_nag as { rules_to_suppress: { id: string; reason: string }[] }).rules_to_suppress.map(
        (s) => ({
          type: r.Type,
          what: r.Properties?.RouteKey ?? null,
          id: s.id,
          reason: s.reason,
        }),
      ),
    );
}

export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string[];
  Resource: unknown;
  Condition?: unknown;
  Principal?: unknown;
}

const normalize = (s: Json): Statement => {
  const action = s.Action as string | string[];
  return { ...(s as unknown as Statement), Action: (Array.isArray(action) ? [...action] : [action]).sort() };
};

/** Every statement of every policy a role has (inline and attached), symbolized, sorted by Sid. */
export function roleStatements(assembly: Assembly, roleId: string): Statement[] {
  const role = resources(assembly.statelessJson)[roleId];
  if (!role) throw new Error(`no role ${roleId}`);
  if (role.Properties?.ManagedPolicyArns) throw new Error(`${roleId} has managed policies`);
  const inline = ((role.Properties?.Policies ?? []) as { PolicyDocument: { Statement: Json[] } }[]).flatMap(
    (p) => p.PolicyDocument.Statement,
  );
  const attached = ofType(assembly.statelessJson, 'AWS::IAM::Policy')
    .filter(([, p]) => (p.Properties?.Roles as { Ref: string }[]).some((r) => r.Ref === roleId))
    .flatMap(([, p]) => (p.Properties?.PolicyDocument as { Statement: Json[] }).Statement);
  return [...inline, ...attached]
    .map((s) => symbolize(assembly, normalize(s)) as Statement)
    .sort((a, b) => (a.Sid ?? '').localeCompare(b.Sid ?? ''));
}
