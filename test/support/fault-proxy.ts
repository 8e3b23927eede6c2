/**
 * A loopback HTTP proxy in front of a CRM endpoint that can be told to fail.
 *
 * Two kinds of fault, each for the next N matching requests:
 * - `failNext`: the proxy answers *instead of* the CRM (a status, a hang, a
 *   dropped connection): the CRM never sees the request, as with a WAF or a
 *   gateway that refuses it;
 * - `failAfterForward`: the proxy *forwards* the request, lets the CRM do its
 *   part (commit a refresh, rotate the refresh token), and then delays the
 *   answer, drops the connection, or replaces the answer with another status.
 *   Only this kind finds what a client does to a grant when the CRM has
 *   committed and the answer is late or lost (security.md row 18).
 *
 * `delayAnswers` slows every answer after forwarding (a slow, healthy CRM), and
 * `answers` records every upstream answer, including those then lost, so a
 * test can check what the CRM issued (e.g. that no refresh token it handed out
 * still redeems).
 */
import { type IncomingMessage, type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault = { status: number; body?: string; headers?: Record<string, string> } | 'hang' | 'destroy';

/** What happens to the CRM's answer after the request was forwarded and processed. */
export type LateFault =
  { delayMs: number } | 'drop' | { replaceStatus: number; body?: string; headers?: Record<string, string> };

export interface ProxiedRequest {
  method: string;
  path: string;
  body: string;
}

export interface UpstreamAnswer {
  path: string;
  status: number;
  /** The parsed JSON body, or undefined. */
  json: unknown;
  /** What the proxy did with it. */
  fate: 'forwarded' | 'delayed' | 'dropped' | 'replaced';
}

export interface FaultProxy {
  url: string;
  /** Origin requests are forwarded to (settable after start). */
  target: string;
  requests: number;
  /** Requests that count for queued faults (default: every request). */
  matching: (request: ProxiedRequest) => boolean;
  failNext(fault: Fault, times?: number): void;
  failAfterForward(fault: LateFault, times?: number): void;
  /** Delays every forwarded answer by `ms` (0 turns it off). */
  delayAnswers(ms: number): void;
  /** Every answer the upstream gave, in order. */
  readonly answers: UpstreamAnswer[];
  /** Drops queued faults, the delay and the recorded answers. */
  clear(): void;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const readBody = (req: IncomingMessage) =>
  new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });

export async function startFaultProxy(target = ''): Promise<FaultProxy> {
  const faults: Fault[] = [];
  const lateFaults: LateFault[] = [];
  let delayMs = 0;
  const proxy: FaultProxy = {
    url: '',
    target,
    requests: 0,
    matching: () => true,
    answers: [],
    failNext(fault, times = 1) {
      for (let i = 0; i < times; i++) faults.push(fault);
    },
    failAfterForward(fault, times = 1) {
      for (let i = 0; i < times; i++) lateFaults.push(fault);
    },
    delayAnswers(ms) {
      delayMs = ms;
    },
    clear() {
      faults.length = 0;
      lateFaults.length = 0;
      delayMs = 0;
      proxy.answers.length = 0;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };

  const server: Server = createServer((req, res) => {
    proxy.requests++;
    const handle = async () => {
      const body = await readBody(req);
      const request = {
        method: req.method ?? 'GET',
        path: new URL(req.url ?? '/', 'http://proxy').pathname,
        body: body.toString('utf8'),
      };
      const matches = proxy.matching(request);
      const fault = matches ? faults.shift() : undefined;
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
      const late = matches ? lateFaults.shift() : undefined;

      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers))
        if (typeof v === 'string' && k !== 'host' && k !== 'content-length') headers[k] = v;
      const upstream = await fetch(`${proxy.target}${req.url}`, {
        method: request.method,
        headers,
        ...(body.length ? { body } : {}),
        redirect: 'manual',
      });
      const answer = Buffer.from(await upstream.arrayBuffer());
      let json: unknown;
      try {
        json = JSON.parse(answer.toString('utf8'));
      } catch {
        json = undefined;
      }
      const record: UpstreamAnswer = { path: request.path, status: upstream.status, json, fate: 'forwarded' };
      proxy.answers.push(record);

      if (late === 'drop') {
        record.fate = 'dropped';
        req.socket.destroy();
        return;
      }
      if (late && 'replaceStatus' in late) {
        record.fate = 'replaced';
        res.writeHead(late.replaceStatus, { 'Content-Type': 'text/html', ...late.headers });
        res.end(late.body ?? '<html><body>Bad gateway</body></html>');
        return;
      }
      const wait = (late && 'delayMs' in late ? late.delayMs : 0) + delayMs;
      if (wait > 0) {
        record.fate = 'delayed';
        await sleep(wait);
        // The client may have given up meanwhile: then this answer is lost.
        if (res.destroyed || req.socket.destroyed) return;
      }
      const out: Record<string, string> = {};
      upstream.headers.forEach((v, k) => {
        if (!['content-length', 'content-encoding', 'transfer-encoding', 'connection'].includes(k))
          out[k] = v;
      });
      res.writeHead(upstream.status, out);
      res.end(answer);
    };
    handle().catch(() => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
