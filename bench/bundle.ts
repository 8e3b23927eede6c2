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

export async function bundleAndTime(
  entry: string,
  outfile: string,
  env: NodeJS.ProcessEnv = process.env,
  runs = 7,
): Promise<BundleTiming> {
  // The options of infra/broker-function.ts: minified ESM for Node, `require` shimmed for CJS deps.
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
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const t=performance.now();await import(${JSON.stringify(pathToFileURL(resolve(outfile)).href)});console.log(performance.now()-t)`,
      ],
      { encoding: 'utf8', env: { ...env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } },
    );
    times.push(Number(out.trim().split('\n').pop()));
  }
  times.sort((a, b) => a - b);
  return { kib: Math.round(statSync(outfile).size / 1024), importMs: times[Math.floor(runs / 2)] as number };
}
