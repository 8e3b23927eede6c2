/**
 * The embedded DynamoDB-compatible store for `npm start`: dynalite (pure Node,
 * on LevelDB), persisting in a folder, listening on loopback.
 *
 * A known limit: dynalite keys a global index entry by the index key and the
 * first 6 hex characters of an MD5 of the item's key, so two items with the
 * same index key (one due partition and second) whose hashes collide keep one
 * entry between them; the other is missing from the due index until its next
 * write (measured: about 1 of 10,000 connections due in the same second, in
 * one run of ten). DynamoDB and DynamoDB Local have no such limit. Locally such
 * a connection is still refreshed when its token is fetched.
 */
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import dynalite from 'dynalite';

export interface EmbeddedDynamo {
  endpoint: string;
  close(): Promise<void>;
}

export async function startEmbeddedDynamo(
  opts: { dataDir?: string; port?: number } = {},
): Promise<EmbeddedDynamo> {
  if (opts.dataDir) mkdirSync(opts.dataDir, { recursive: true });
  const server = dynalite({
    ...(opts.dataDir ? { path: opts.dataDir } : {}),
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
