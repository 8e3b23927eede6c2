/**
 * What the benchmarks that run a whole local broker share: connecting a sandbox
 * CRM the way a person clicks it, and an embedded store whose DynamoDB client
 * counts the commands each section sends (and, asked to, the capacity units
 * they cost).
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { startEmbeddedDynamo } from '../local/embedded-store.ts';
import type { LocalServer } from '../local/server.ts';
import type { ProviderId } from '../manifest/functions.ts';
import { tableDefinition } from '../manifest/table.ts';
import { Browser } from '../test/support/browser.ts';
import { type CapacityMeter, meterCapacity } from './dynamo-capacity.ts';

/** Connects a sandbox CRM for `ownerId` through the consent page; returns the connection id. */
export async function connectSandbox(
  server: LocalServer,
  ownerId: string,
  provider: ProviderId,
): Promise<string> {
  const returnTo = `${server.deps.config.publicBaseUrl}/done`;
  const session = (await server.invoke('connect-session', { ownerId, provider, returnTo })) as {
    connectUrl: string;
  };
  const browser = new Browser();
  let page = await browser.follow(await browser.request(session.connectUrl));
  page = await browser.submit(page, /allow/i);
  // Copper answers with a page that posts the code to the broker's callback.
  if (page.status === 200 && /<form[^>]*method="?post/i.test(page.body)) page = await browser.submit(page);
  const done = await browser.follow(page, (url) => url.startsWith(returnTo));
  const connectionId = new URL(done.url).searchParams.get('connection_id');
  if (!connectionId) throw new Error(`bench: the ${provider} sandbox connection failed`);
  return connectionId;
}

/**
 * An embedded store and a client of it that counts every command by name in
 * `commands`. With `capacity`, the client is also metered (bench/dynamo-capacity.ts):
 * what each command cost in DynamoDB capacity units, by command and item, as
 * dynalite reports it (table only) and as DynamoDB's rules compute it from the
 * items around each write (table and indexes: the figures to use). Metering
 * reads each written item before and after through another client, so it
 * slows the store: not for timed runs.
 */
export async function countingStore(options: { capacity?: { source: string; tableName: string } } = {}) {
  const store = await startEmbeddedDynamo({});
  const client = () =>
    new DynamoDBClient({
      endpoint: store.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    });
  const dynamo = client();
  const commands: Record<string, number> = {};
  dynamo.middlewareStack.add(
    (next, context) => async (args) => {
      const name = String(context.commandName).replace(/Command$/, '');
      commands[name] = (commands[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'benchCountCommands' },
  );
  const capacity: CapacityMeter | undefined = options.capacity
    ? meterCapacity(dynamo, {
        source: options.capacity.source,
        table: tableDefinition(options.capacity.tableName),
        images: client(),
      })
    : undefined;
  return { store, dynamo, commands, capacity };
}

/**
 * The fields of a connection item as a connect stores them, before any refresh
 * (an hour's token, version 1), for the benches that seed items by hand.
 */
export function freshConnectionFields(now: number) {
  return {
    issuedLifetimeSeconds: 3600,
    lastRefreshedAt: null,
    lastError: null,
    version: 1,
    refreshFailures: 0,
    createdAt: now,
    updatedAt: now,
  };
}

/**
 * The due time (epoch s) of the `n`-th due connection a bench seeds: in the
 * last ten minutes, as if written an hour ago (the broker writes due times
 * ahead of its clock), spread as real due times are. The embedded store
 * (dynalite) keys an index entry by its index key and a 24-bit hash of the
 * item's key, so two entries of one due second can collide and one drop out of
 * the index (local/embedded-store.ts).
 */
export function seededDueAt(now: number, n: number): number {
  return Math.floor(now / 1000) - 60 - (n % 600);
}
