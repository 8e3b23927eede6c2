/** The one request-body reader of the local server, its demo page and the sandbox CRMs. */
import type { IncomingMessage } from 'node:http';

/** The body was larger than allowed: answer 413. */
export class BodyTooLarge extends Error {
  readonly statusCode = 413;
  constructor() {
    super('Request body too large');
    this.name = 'BodyTooLarge';
  }
}

/** Reads a request body of at most `limit` bytes, refusing a larger one before or while reading it. */
export function readBodyBytes(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      settle();
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) finish(() => reject(new BodyTooLarge()));
      else chunks.push(chunk);
    });
    req.on('end', () => finish(() => resolve(Buffer.concat(chunks))));
    req.on('error', (err) => finish(() => reject(err)));
  });
}
