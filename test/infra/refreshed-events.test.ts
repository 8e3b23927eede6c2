/**
 * `publishRefreshedEvents`: the functions that refresh get `PUBLISH_REFRESHED_EVENTS` with the
 * context's value (`false` unless the deployment turns `connection.refreshed` on); no other function
 * gets it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type FunctionName, functionNames } from '../../manifest/functions.ts';
import { type Assembly, type Json, functionResource, loadAssembly, synthesize } from './support.ts';

/** Named here, not imported: the test says which functions it expects to run refreshes. */
const refreshing: FunctionName[] = ['token-fetch', 'refresh', 'crm-request', 'refresh-worker'];

const setting = (assembly: Assembly, name: FunctionName): unknown => {
  const [, fn] = functionResource(assembly.statelessJson, 'AWS::Lambda::Function', name);
  return ((fn.Properties?.Environment as { Variables: Json }).Variables as Json).PUBLISH_REFRESHED_EVENTS;
};

describe('by default', () => {
  let assembly: Assembly;
  beforeAll(() => {
    assembly = loadAssembly(inject('assemblyDir'));
  });

  it.each(refreshing)('%s publishes no connection.refreshed: PUBLISH_REFRESHED_EVENTS=false', (name) => {
    expect(setting(assembly, name)).toBe('false');
  });

  it.each(functionNames.filter((n) => !refreshing.includes(n)))(
    '%s, which never refreshes, has no such setting',
    (name) => {
      expect(setting(assembly, name)).toBeUndefined();
    },
  );
});

describe('with -c publishRefreshedEvents=true', () => {
  let outdir: string;
  let assembly: Assembly;
  beforeAll(() => {
    outdir = mkdtempSync(join(tmpdir(), 'crm-oauth-broker-refreshed-'));
    synthesize({ outdir, bundle: false, context: { publishRefreshedEvents: 'true' } });
    assembly = loadAssembly(outdir);
  });
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  it.each(refreshing)('%s publishes connection.refreshed: PUBLISH_REFRESHED_EVENTS=true', (name) => {
    expect(setting(assembly, name)).toBe('true');
  });

  it('still sets it on no other function', () => {
    expect(functionNames.filter((n) => setting(assembly, n) !== undefined).sort()).toEqual(
      [...refreshing].sort(),
    );
  });
});
