/** Bundles an entry the way the Lambda functions are bundled, and times importing it in fresh processes. */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';

export interface BundleTiming {
  kib: number;
  /** Median import time (module evaluation and init included) over `runs` fresh `node` processes. */
  importMs: number;
}

/** Bundles `entry` to `outfile` with the options of infra/broker-function.ts; answers its size in KiB. */
export async function bundle(entry: string, outfile: string): Promise<number> {
  // Minified ESM for Node, `require` shimmed for CJS deps.
  await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    mainFields: ['module', 'main'],
    nodePaths: [join(process.cwd(), 'node_modules')],
    banner: { js: "import{createRequire as __cr}from'node:module';const require=__cr(import.meta.url);" },
    outfile,
    logLevel: 'error',
  });
  return Math.round(statSync(outfile).size / 1024);
}

/** One import of `outfile` in a fresh `node` process: ms from the import's start to its end. */
function importOnce(outfile: string, env: NodeJS.ProcessEnv): number {
  const out = execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const t=performance.now();await import(${JSON.stringify(pathToFileURL(resolve(outfile)).href)});console.log(performance.now()-t)`,
    ],
    { encoding: 'utf8', env: { ...env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } },
  );
  return Number(out.trim().split('\n').pop());
}

const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

/**
 * Median import time of each bundle over `rounds` rounds, every round importing
 * each bundle once in turn: a busy spell of the machine falls on all of them
 * alike, so their ratios hold even when the absolute times drift.
 */
export function timeImports(outfiles: readonly string[], env: NodeJS.ProcessEnv, rounds = 9): number[] {
  const times = outfiles.map((): number[] => []);
  for (let round = 0; round < rounds; round++) {
    outfiles.forEach((outfile, i) => times[i]?.push(importOnce(outfile, env)));
  }
  return times.map(median);
}

export async function bundleAndTime(
  entry: string,
  outfile: string,
  env: NodeJS.ProcessEnv = process.env,
  runs = 7,
): Promise<BundleTiming> {
  const kib = await bundle(entry, outfile);
  const [importMs] = timeImports([outfile], env, runs);
  return { kib, importMs: importMs as number };
}
