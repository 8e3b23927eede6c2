/**
 * `npm start`: the whole broker on 127.0.0.1:$PORT (default 3000). Prints a short banner (where
 * everything is), then one short line per request; a port or a `.data/` folder in use by another
 * process is one line of explanation, never a stack trace.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { crms } from './sandbox/crms.ts';
import { startLocalServer } from './server.ts';
import { type HumanLogOptions, humanLogLine } from './log-lines.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
// Locally the request lines below say what happened; the functions' own JSON lines only from warnings
// up (POWERTOOLS_LOG_LEVEL=INFO shows the access and refusal lines too).
process.env.POWERTOOLS_LOG_LEVEL ??= 'WARN';

const DATA_DIR = '.data';
const fail = (message: string): never => {
  console.error(`crm-oauth-broker: ${message}`);
  process.exit(1);
};

/**
 * One `npm start` per data folder: the embedded store (LevelDB) locks it, and a second process would
 * die later with dynalite's "Database is closed". A pid file says who holds it; a stale one is taken over.
 */
function lockDataDir(): () => void {
  const file = join(DATA_DIR, 'npm-start.pid');
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(file, 'utf8').trim());
      if (holder && holder !== process.pid && isAlive(holder)) {
        fail(
          `${resolve(DATA_DIR)} is in use by another npm start (pid ${holder}). Stop that one first, or run this one from another folder.`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  return fail(`could not lock ${resolve(DATA_DIR)}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

const duration = (seconds: number) =>
  seconds < 120
    ? `${seconds} s`
    : seconds < 7200
      ? `${Math.round(seconds / 60)} min`
      : seconds < 172_800
        ? `${Math.round(seconds / 3600)} h`
        : `${Math.round(seconds / 86_400)} days`;

/** Locally, the functions' Powertools JSON lines become short human ones; anything else passes as it is. */
function humanLogs(options: HumanLogOptions) {
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) =>
      write(
        typeof chunk === 'string' && chunk.startsWith('{') ? humanLogLine(chunk, options) : chunk,
        ...rest,
      )) as typeof stream.write;
  }
}

mkdirSync(DATA_DIR, { recursive: true });
const unlock = lockDataDir();
process.on('exit', unlock);

const lifetime = Number(process.env.SANDBOX_TOKEN_LIFETIME_SECONDS) || undefined;
// Short sandbox lifetimes are for watching refreshes happen: with the default 5-minute schedule the
// tokens would expire first. Unless the schedule is set, run it four times per token lifetime.
const derivedSchedule = Boolean(lifetime && !process.env.REFRESH_INTERVAL_SECONDS);
if (lifetime && derivedSchedule) {
  process.env.REFRESH_INTERVAL_SECONDS = String(Math.max(10, Math.floor(lifetime / 4)));
}
humanLogs({ color: Boolean(process.stdout.isTTY) });

const server = await startLocalServer({
  dataDir: DATA_DIR,
  ...(lifetime ? { sandboxTokenLifetimeSeconds: lifetime } : {}),
  // The demo page polls its state every few seconds: only a failed poll is worth a line.
  log: (line) => {
    if (!line.startsWith('GET /demo/state 200 ')) console.log(line);
  },
}).catch((err: unknown): never => {
  const e = err as { code?: unknown; message?: unknown };
  if (e.code === 'EADDRINUSE') {
    const port = process.env.PORT ?? '3000';
    return fail(
      `port ${port} is in use (another npm start?). Stop it, or run on another port: PORT=${Number(port) + 1} npm start`,
    );
  }
  if (typeof e.message === 'string' && /Database is closed|LOCK/.test(e.message)) {
    return fail(
      `${resolve(DATA_DIR)} is in use by another process (the embedded store's lock). Stop it first.`,
    );
  }
  throw err;
});

const config = server.deps.config;
const base = config.publicBaseUrl;
const env = process.env;
const sandboxed = server.sandboxProviders;
const real = (['copper', 'capsule', 'close'] as const).filter(
  (p) => config.clients[p] && !sandboxed.includes(p),
);
const lifetimes = sandboxed.map((p) => {
  const name = config.providers[p].displayName;
  const own = crms[p].accessTokenLifetime;
  if (own === null) return `${name} never expires`;
  return `${name} ${duration(lifetime ?? own)}`;
});
const row = (label: string, value: string) => `  ${label.padEnd(13)} ${value}`;
console.log(
  [
    `crm-oauth-broker on ${base}`,
    row('demo page', `${base}/`),
    row('Invoke API', `new LambdaClient({ endpoint: '${server.url}' })`),
    row(
      'store',
      env.AWS_ENDPOINT_URL_DYNAMODB
        ? `DynamoDB at ${env.AWS_ENDPOINT_URL_DYNAMODB}, table ${config.tableName}`
        : `embedded (dynalite), data in ${join(DATA_DIR, 'dynamodb')}`,
    ),
    row(
      'key',
      env.KMS_KEY_ID
        ? `KMS ${env.KMS_KEY_ID}${env.AWS_ENDPOINT_URL_KMS ? ` at ${env.AWS_ENDPOINT_URL_KMS}` : ''}`
        : `local master key ${join(DATA_DIR, 'master.key')}`,
    ),
    row('events', `${server.eventsFile ?? 'in memory'} (kept across restarts)`),
    row(
      'schedule',
      `scheduled refresh every ${duration(config.refreshIntervalSeconds)}` +
        (derivedSchedule ? ` (a quarter of SANDBOX_TOKEN_LIFETIME_SECONDS=${lifetime})` : ''),
    ),
    ...(sandboxed.length
      ? [
          row('sandbox CRMs', `${sandboxed.join(', ')}; tokens: ${lifetimes.join(', ')}`),
          lifetime
            ? row('', 'connections made before keep their old lifetime until their next refresh')
            : row(
                '',
                'SANDBOX_TOKEN_LIFETIME_SECONDS=120 npm start makes tokens expire in 2 min, to watch refreshes',
              ),
        ]
      : []),
    ...(real.length ? [row('real CRMs', real.join(', '))] : []),
    row('data', `${resolve(DATA_DIR)} (delete it to start from nothing)`),
    '',
  ].join('\n'),
);

const stop = () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
