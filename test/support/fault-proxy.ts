/**
 * A loopback HTTP proxy in front of a CRM endpoint that can be told to fail:
 * answer a status, hang, or drop the connection, for the next N requests.
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault = { status: number; body?: string; headers?: Record<string, string> } | 'hang' | 'destroy';

export interface FaultProxy {
  url: string;
  /** Origin requests are forwarded to (settable after start). */
  target: string;
  requests: number;
  failNext(fault: Fault, times?: number): void;
  /** Drops queued faults. */
  clear(): void;
  close(): Promise<void>;
}

export async function startFaultProxy(target = ''): Promise<FaultProxy> {
  const faults: Fault[] = [];
  const proxy: FaultProxy = {
    url: '',
    target,
    requests: 0,
    failNext(fault, times = 1) {
      for (let i = 0; i < times; i++) faults.push(fault);
    },
    clear() {
      faults.length = 0;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server: Server = createServer((req, res) => {
    proxy.requests++;
    const fault = faults.shift();
    if (fault === 'hang') return;
    if (fault === 'destroy') {
      req.socket.destroy();
      return;
    }
    if (fault) {
      res.writeHead(fault.status, { 'Content-Type': 'application/json', ...fault.headers });
      res.end(fault.body ?? '{}');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      try {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers))
          if (typeof v === 'string' && k !== 'host') headers[k] = v;
        const upstream = await fetch(`${proxy.target}${req.url}`, {
          method: req.method ?? 'GET',
          headers,
          ...(chunks.length ? { body: Buffer.concat(chunks) } : {}),
          redirect: 'manual',
        });
        const body = Buffer.from(await upstream.arrayBuffer());
        const out: Record<string, string> = {};
        upstream.headers.forEach((v, k) => {
          if (!['content-length', 'content-encoding', 'transfer-encoding', 'connection'].includes(k))
            out[k] = v;
        });
        res.writeHead(upstream.status, out);
        res.end(body);
      } catch {
        res.writeHead(502).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
