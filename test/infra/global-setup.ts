/**
 * Synthesizes the whole app once, bundling all seven functions, for every
 * template test file (each reads the templates from the assembly directory).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { synthesize } from './support.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    assemblyDir: string;
  }
}

export default function setup(project: TestProject): () => void {
  const outdir = mkdtempSync(join(tmpdir(), 'crm-oauth-broker-cdk-'));
  const started = Date.now();
  synthesize({ outdir, bundle: true });
  console.log(`infra: synthesized the app with bundling in ${Date.now() - started} ms`);
  project.provide('assemblyDir', outdir);
  return () => rmSync(outdir, { recursive: true, force: true });
}
