/**
 * The HTTP API is the route table: every route reaches the function the local
 * server runs for it, public routes are throttled, the service route needs IAM,
 * and access logs never carry a query string.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { REPO_ROOT } from '../../infra/broker-function.ts';
import { handlerFactories } from '../../local/functions.ts';
import {
  type FunctionName,
  functionEntry,
  functionNames,
  httpRoutes,
  matchRoutePath,
} from '../../manifest/functions.ts';
import {
  type Assembly,
  type Json,
  type Resource,
  loadAssembly,
  ofType,
  resources,
  symbolize,
  synthesize,
} from './support.ts';

let assembly: Assembly;
beforeAll(() => {
  assembly = loadAssembly(inject('assemblyDir'));
});

const routeKey = (r: { method: string; path: string }) => `${r.method} ${r.path}`;

/** The function (by broker name) a template route's integration invokes. */
function functionOfRoute(route: Resource): string {
  const target = route.Properties?.Target as { 'Fn::Join': [string, unknown[]] };
  const integrationRef = target['Fn::Join'][1][1] as { Ref: string };
  const integration = resources(assembly.statelessJson)[integrationRef.Ref] as Resource;
  expect(integration.Properties?.IntegrationType).toBe('AWS_PROXY');
  expect(integration.Properties?.PayloadFormatVersion).toBe('2.0');
  const uri = symbolize(assembly, integration.Properties?.IntegrationUri) as string;
  const match = /^Function\[(.+)\]\.Arn$/.exec(uri);
  if (!match) throw new Error(`integration does not invoke a broker function: ${uri}`);
  return match[1] as string;
}

describe('routes come from the route table', () => {
  it('has exactly the routes of manifest/functions.ts', () => {
    const keys = ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Route').map(
      ([, r]) => r.Properties?.RouteKey,
    );
    expect(keys.sort()).toEqual(httpRoutes.map(routeKey).sort());
  });

  it.each(httpRoutes.map((r) => [routeKey(r), r] as const))('%s reaches its function', (key, route) => {
    const [, resource] = ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Route').find(
      ([, r]) => r.Properties?.RouteKey === key,
    ) as [string, Resource];
    expect(functionOfRoute(resource)).toBe(route.function);
    expect(resource.Properties?.AuthorizationType).toBe(route.authorization === 'IAM' ? 'AWS_IAM' : 'NONE');
  });

  it('only the refresh route is IAM-authorized; the browser routes are public', () => {
    const auth = Object.fromEntries(
      ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Route').map(([, r]) => [
        r.Properties?.RouteKey,
        r.Properties?.AuthorizationType,
      ]),
    );
    expect(auth).toEqual({
      'GET /connect/{provider}': 'NONE',
      'GET /callback/{provider}': 'NONE',
      'POST /callback/{provider}': 'NONE',
      'POST /connections/{connectionId}/refresh': 'AWS_IAM',
    });
  });

  it('lets API Gateway invoke each routed function only for its own route', () => {
    const permissions = ofType(assembly.statelessJson, 'AWS::Lambda::Permission').map(([, p]) => ({
      fn: symbolize(assembly, p.Properties?.FunctionName),
      principal: p.Properties?.Principal,
      sourceArn: symbolize(assembly, p.Properties?.SourceArn),
    }));
    expect(permissions).toHaveLength(httpRoutes.length);
    for (const route of httpRoutes) {
      expect(permissions).toContainEqual({
        fn: `Function[${route.function}].Arn`,
        principal: 'apigateway.amazonaws.com',
        sourceArn: `arn:aws:execute-api:us-east-1:111111111111:Api.Ref/*/*${route.path}`,
      });
    }
  });

  it('each routed function is bundled from its own handler file', () => {
    const handlerFiles = functionNames.map(functionEntry);
    for (const name of new Set(httpRoutes.map((r) => r.function))) {
      const [, fn] = ofType(assembly.statelessJson, 'AWS::Lambda::Function').find(([, f]) =>
        JSON.stringify(f.Properties?.Tags).includes(`"Value":"${name}"`),
      ) as [string, Resource];
      // The asset manifest maps the function's code object back to its bundle directory.
      const key = (fn.Properties?.Code as { S3Key: string }).S3Key;
      const manifest = JSON.parse(readFileSync(join(assembly.dir, 'Stateless.assets.json'), 'utf8')) as {
        files: Record<
          string,
          { source: { path: string }; destinations: Record<string, { objectKey: string }> }
        >;
      };
      const asset = Object.values(manifest.files).find((f) =>
        Object.values(f.destinations).some((d) => d.objectKey === key),
      );
      if (!asset) throw new Error(`no asset for ${name}`);
      const assetDir = join(assembly.dir, asset.source.path);
      const sources = (
        JSON.parse(readFileSync(join(assetDir, 'index.mjs.map'), 'utf8')) as { sources: string[] }
      ).sources;
      const handlers = handlerFiles.filter((file) => sources.some((s) => s.endsWith(file)));
      expect(handlers).toEqual([functionEntry(name)]);
    }
  });
});

describe('the route table and the local server agree', () => {
  const concrete = (path: string) => path.replace(/\{[^}]+\}/g, 'sample-value');

  it.each(httpRoutes.map((r) => [routeKey(r), r] as const))(
    '%s: the local server dispatches it to the handler module AWS runs',
    async (_key, route) => {
      // The local server takes the first route of the table whose method and path match.
      const local = httpRoutes.find(
        (r) => r.method === route.method && matchRoutePath(r.path, concrete(route.path)),
      );
      expect(local?.function).toBe(route.function);
      // ...and builds that function's handler from the module the stack bundles.
      const entry = pathToFileURL(join(REPO_ROOT, functionEntry(route.function))).href;
      const module = (await import(/* @vite-ignore */ entry)) as { createHandler: unknown };
      expect(handlerFactories[route.function as FunctionName]).toBe(module.createHandler);
    },
  );
});

describe('stage', () => {
  const stage = (): Json => {
    const stages = ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Stage');
    expect(stages).toHaveLength(1);
    return (stages[0] as [string, Resource])[1].Properties as Json;
  };

  it('is the auto-deployed $default stage', () => {
    expect(stage().StageName).toBe('$default');
    expect(stage().AutoDeploy).toBe(true);
  });

  it('throttles every route, and the public routes on their own', () => {
    expect(stage().DefaultRouteSettings).toEqual({ ThrottlingBurstLimit: 100, ThrottlingRateLimit: 50 });
    const publicKeys = httpRoutes.filter((r) => r.authorization === 'NONE').map(routeKey);
    expect(Object.keys(stage().RouteSettings as Json).sort()).toEqual(publicKeys.sort());
    for (const key of publicKeys) {
      expect((stage().RouteSettings as Json)[key]).toEqual({
        ThrottlingRateLimit: 20,
        ThrottlingBurstLimit: 40,
      });
    }
  });

  it('waits for the routes its route settings name', () => {
    const [, s] = ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Stage')[0] as [string, Resource];
    const routeIds = ofType(assembly.statelessJson, 'AWS::ApiGatewayV2::Route').map(([id]) => id);
    for (const id of routeIds) expect(s.DependsOn).toContain(id);
  });

  it('writes JSON access logs with no query string, body or header values', () => {
    const settings = stage().AccessLogSettings as { Format: string; DestinationArn: unknown };
    const format = JSON.parse(settings.Format) as Record<string, string>;
    for (const value of Object.values(format)) {
      expect(value).toMatch(/^\$context\.[A-Za-z.]+$/);
      expect(value.toLowerCase()).not.toMatch(
        /querystring|query|body|header|input|requestoverride|authorizer/,
      );
    }
    expect(format).toMatchObject({
      requestId: '$context.requestId',
      routeKey: '$context.routeKey',
      path: '$context.path',
      status: '$context.status',
    });
    expect(symbolize(assembly, settings.DestinationArn)).toBe('LogGroup.Arn');
    const [, group] = ofType(assembly.statelessJson, 'AWS::Logs::LogGroup').find(
      ([id]) => symbolize(assembly, { 'Fn::GetAtt': [id, 'Arn'] }) === 'LogGroup.Arn',
    ) as [string, Resource];
    expect(group.Properties?.RetentionInDays).toBe(30);
  });
});

describe('custom domain', () => {
  it('serves the broker on the domain, registers callbacks there and closes the execute-api URL', () => {
    const outdir = mkdtempSync(join(tmpdir(), 'crm-oauth-broker-domain-'));
    try {
      synthesize({
        outdir,
        bundle: false,
        context: {
          domainName: 'crm-auth.example.com',
          certificateArn:
            'arn:aws:acm:us-east-1:111111111111:certificate/0f0e0d0c-0b0a-0908-0706-050403020100',
        },
      });
      const domainAssembly = loadAssembly(outdir);
      const t = domainAssembly.stateless;
      t.hasResourceProperties('AWS::ApiGatewayV2::DomainName', {
        DomainName: 'crm-auth.example.com',
        DomainNameConfigurations: [
          {
            CertificateArn:
              'arn:aws:acm:us-east-1:111111111111:certificate/0f0e0d0c-0b0a-0908-0706-050403020100',
          },
        ],
      });
      t.resourceCountIs('AWS::ApiGatewayV2::ApiMapping', 1);
      t.hasResourceProperties('AWS::ApiGatewayV2::Api', { DisableExecuteApiEndpoint: true });
      for (const [, fn] of ofType(domainAssembly.statelessJson, 'AWS::Lambda::Function')) {
        const env = (fn.Properties?.Environment as { Variables: Json }).Variables;
        expect(env.PUBLIC_BASE_URL).toBe('https://crm-auth.example.com');
      }
      t.hasOutput('CallbackUrlClose', { Value: 'https://crm-auth.example.com/callback/close' });
      t.hasOutput('DomainTarget', {});
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
});
