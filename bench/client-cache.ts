/**
 * The client library's token cache, measured in one process against a local broker with the Close
 * sandbox: `token-fetch` invocations per 1,000 `getToken` calls (bursts of 10 concurrent calls).
 * Target: one invocation per token lifetime.
 */
import { LambdaClient } from '@aws-sdk/client-lambda';
import { createBrokerClient } from '@crm-oauth-broker/client';
import { startLocalServer } from '../local/server.ts';
import { connectSandbox } from './local-broker.ts';

type Row = { figure: string; measured: string; target: string; verdict: 'PASS' | 'MISS' | '' };
const OWNER = 'bench-owner';
const CALLS = 1000;
const BURST = 10;

/** 1,000 getToken calls in bursts of 10, spread over `spreadMs`; invocations and distinct tokens seen. */
async function measure(tokenLifetimeSeconds: number | undefined, spreadMs: number) {
  const server = await startLocalServer({
    port: 0,
    dataDir: null,
    schedule: false,
    env: {},
    ...(tokenLifetimeSeconds ? { sandboxTokenLifetimeSeconds: tokenLifetimeSeconds } : {}),
  });
  const lambda = new LambdaClient({
    endpoint: server.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
  });
  let invocations = 0;
  lambda.middlewareStack.add(
    (next) => async (args) => {
      invocations += 1;
      return next(args);
    },
    { step: 'initialize', name: 'benchCountInvocations' },
  );
  const client = createBrokerClient({ lambda });
  try {
    const connectionId = await connectSandbox(server, OWNER, 'close');
    const tokens = new Set<string>();
    const started = performance.now();
    for (let i = 0; i < CALLS / BURST; i++) {
      const burst = await Promise.all(
        Array.from({ length: BURST }, () => client.getToken(connectionId, { ownerId: OWNER })),
      );
      for (const token of burst) tokens.add(token.accessToken);
      if (spreadMs > 0) await new Promise((r) => setTimeout(r, spreadMs / (CALLS / BURST)));
    }
    return {
      invocations,
      tokens: tokens.size,
      seconds: (performance.now() - started) / 1000,
      refreshes: server.sandbox.calls().close?.['token:refresh_token'] ?? 0,
    };
  } finally {
    client.destroy();
    lambda.destroy();
    await server.close();
  }
}

export async function clientTokenCache(printTable: (title: string, rows: Row[]) => void) {
  const hour = await measure(undefined, 0);
  // One-minute tokens (the broker's shortest accepted lifetime), calls spread over 95 s: the broker
  // refreshes at half the lifetime, so each token serves 30 s and several are used in turn.
  const short = await measure(60, 95_000);
  printTable('Client library: token-fetch invocations per 1,000 getToken calls (one process, local broker)', [
    {
      figure: 'Close, 1-hour tokens, 100 bursts of 10',
      measured: `${hour.invocations} invocation(s), ${hour.tokens} token(s)`,
      target: '1 (one token lifetime)',
      verdict: hour.invocations === 1 ? 'PASS' : 'MISS',
    },
    {
      figure: `Close, 1-minute tokens, spread over ${short.seconds.toFixed(1)} s`,
      measured: `${short.invocations} invocation(s), ${short.tokens} token(s), ${short.refreshes} refresh(es)`,
      target: '1 per token lifetime (invocations = tokens seen)',
      verdict: short.invocations <= short.tokens ? 'PASS' : 'MISS',
    },
  ]);
  return { oneHourTokens: hour, oneMinuteTokens: short };
}
