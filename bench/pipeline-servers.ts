/**
 * The outside world of the refresh pipeline bench (bench/refresh-pipeline.ts),
 * in a process of its own so the bench process's CPU time is the broker's
 * alone: the embedded store (dynalite) and a CRM token endpoint of fixed
 * latency that rotates refresh tokens and counts calls, per refresh token
 * presented (`GET /count`). Prints its endpoints as one JSON line.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startEmbeddedDynamo } from '../local/embedded-store.ts';

const latencyMs = Number(process.env.CRM_LATENCY_MS ?? 100);
const store = await startEmbeddedDynamo({});
let calls = 0;
/** How often each refresh token was presented: more than once would be a second refresh of one grant. */
const presented = new Map<string, number>();
const crm = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/count') {
    const repeats = [...presented.values()].filter((n) => n > 1).length;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ calls, distinctTokens: presented.size, repeats }));
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    calls++;
    const token = new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('refresh_token') ?? '';
    presented.set(token, (presented.get(token) ?? 0) + 1);
    setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({
          access_token: randomBytes(24).toString('base64url'),
          refresh_token: randomBytes(24).toString('base64url'),
          token_type: 'Bearer',
          expires_in: 3600,
        }),
      );
    }, latencyMs);
  });
});
crm.keepAliveTimeout = 60_000;
await new Promise<void>((r) => crm.listen(0, '127.0.0.1', () => r()));
console.log(
  JSON.stringify({
    dynamo: store.endpoint,
    crm: `http://127.0.0.1:${(crm.address() as AddressInfo).port}`,
  }),
);
process.on('SIGTERM', () => {
  crm.close();
  void store.close().then(() => process.exit(0));
});
