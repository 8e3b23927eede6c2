/**
 * A test double of AWS KMS's JSON 1.1 protocol (Encrypt, Decrypt,
 * GenerateDataKey), so the real `@aws-sdk/client-kms` runs against it. The
 * encryption context is the AES-GCM associated data of its ciphertexts, as in
 * KMS: decrypting with another context fails with InvalidCiphertextException.
 * Like the key policy and the roles the stack writes (manifest/access.ts), it
 * refuses GenerateDataKey and Decrypt with AccessDeniedException unless the
 * context's `purpose` is the token purpose and every context key is one the
 * token context may carry.
 */
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TOKEN_CONTEXT_KEYS, TOKEN_PURPOSE } from '../../manifest/access.ts';

type Op = 'GenerateDataKey' | 'Decrypt' | 'Encrypt';

export interface KmsDouble {
  endpoint: string;
  keyId: string;
  calls: Record<Op, number>;
  /** The encryption context of every GenerateDataKey and Decrypt call, in order (until `reset`). */
  contexts: Record<string, string>[];
  failNext(op: Op, errorType: string, times?: number): void;
  reset(): void;
  close(): Promise<void>;
}

const context = (c: unknown) =>
  JSON.stringify(
    Object.entries((c ?? {}) as Record<string, string>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );

export async function startKmsDouble(): Promise<KmsDouble> {
  const master = randomBytes(32);
  const keyId = `arn:aws:kms:us-east-1:111122223333:key/${randomUUID()}`;
  const calls: Record<Op, number> = { GenerateDataKey: 0, Decrypt: 0, Encrypt: 0 };
  const faults: { op: Op; errorType: string }[] = [];
  const contexts: Record<string, string>[] = [];
  /** The stack's condition on token-key use (kms:EncryptionContext:purpose, kms:EncryptionContextKeys). */
  const allowedContext = (c: Record<string, string>) =>
    c.purpose === TOKEN_PURPOSE && Object.keys(c).every((k) => TOKEN_CONTEXT_KEYS.includes(k));

  const seal = (plaintext: Buffer, ctx: unknown) => {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', master, iv);
    c.setAAD(Buffer.from(keyId + context(ctx)));
    const ct = Buffer.concat([c.update(plaintext), c.final()]);
    return Buffer.concat([Buffer.from([1]), iv, c.getAuthTag(), ct]);
  };
  const open = (blob: Buffer, ctx: unknown) => {
    if (blob.length < 29 || blob[0] !== 1) return undefined;
    try {
      const d = createDecipheriv('aes-256-gcm', master, blob.subarray(1, 13));
      d.setAAD(Buffer.from(keyId + context(ctx)));
      d.setAuthTag(blob.subarray(13, 29));
      return Buffer.concat([d.update(blob.subarray(29)), d.final()]);
    } catch {
      return undefined;
    }
  };

  const handle = (op: string, body: Record<string, any>): [number, unknown] => {
    const error = (type: string, message = type) => [400, { __type: type, message }] as [number, unknown];
    if (op !== 'GenerateDataKey' && op !== 'Decrypt' && op !== 'Encrypt')
      return error('UnknownOperationException');
    calls[op]++;
    const fault = faults.findIndex((f) => f.op === op);
    if (fault >= 0) return error(faults.splice(fault, 1)[0]!.errorType, 'injected fault');
    const keyMatches = (id: unknown) => id === undefined || id === keyId || id === keyId.split('/')[1];
    if (op !== 'Encrypt') {
      const ctx = (body.EncryptionContext ?? {}) as Record<string, string>;
      contexts.push(ctx);
      if (!allowedContext(ctx)) return error('AccessDeniedException', 'encryption context not allowed');
    }
    if (op === 'Decrypt') {
      if (!keyMatches(body.KeyId)) return error('IncorrectKeyException');
      const plaintext = open(
        Buffer.from(String(body.CiphertextBlob ?? ''), 'base64'),
        body.EncryptionContext,
      );
      if (!plaintext) return error('InvalidCiphertextException');
      return [
        200,
        { Plaintext: plaintext.toString('base64'), KeyId: keyId, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' },
      ];
    }
    if (!keyMatches(body.KeyId)) return error('NotFoundException');
    if (op === 'Encrypt') {
      const blob = seal(Buffer.from(String(body.Plaintext ?? ''), 'base64'), body.EncryptionContext);
      return [
        200,
        { CiphertextBlob: blob.toString('base64'), KeyId: keyId, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' },
      ];
    }
    const bytes = body.NumberOfBytes ?? (body.KeySpec === 'AES_128' ? 16 : 32);
    const plaintext = randomBytes(bytes);
    return [
      200,
      {
        CiphertextBlob: seal(plaintext, body.EncryptionContext).toString('base64'),
        Plaintext: plaintext.toString('base64'),
        KeyId: keyId,
      },
    ];
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const op = String(req.headers['x-amz-target'] ?? '').replace(/^TrentService\./, '');
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      } catch {
        /* an empty object answers with a validation-style error below */
      }
      const [status, payload] = handle(op, body);
      res.writeHead(status, {
        'Content-Type': 'application/x-amz-json-1.1',
        'x-amzn-RequestId': randomUUID(),
      });
      res.end(JSON.stringify(payload));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    keyId,
    calls,
    contexts,
    failNext(op, errorType, times = 1) {
      for (let i = 0; i < times; i++) faults.push({ op, errorType });
    },
    reset() {
      faults.length = 0;
      contexts.length = 0;
      for (const op of Object.keys(calls) as Op[]) calls[op] = 0;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
