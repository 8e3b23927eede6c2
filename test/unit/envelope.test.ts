import { randomBytes } from 'node:crypto';
import { KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DecryptionFailed,
  type EncryptionContext,
  Envelope,
  type KeyProvider,
  encryptV1,
  KmsKeyProvider,
  LocalKeyProvider,
} from '../../functions/adapters/kms/envelope.ts';
import { MemoryKeyRing } from '../../functions/adapters/kms/key-ring.ts';
import { TOKEN_CONTEXT_KEYS, TOKEN_PURPOSE } from '../../manifest/access.ts';
import { tokenContext } from '../../functions/core/domain/token-set.ts';
import { type KmsDouble, startKmsDouble } from '../support/kms-double.ts';

/** Counts key operations of a real local key provider (each is one KMS request with `KmsKeyProvider`). */
function countingKeys(master = randomBytes(32).toString('base64')) {
  const inner = new LocalKeyProvider(master);
  const calls = { generate: 0, decrypt: 0 };
  const contexts: EncryptionContext[] = [];
  const keys: KeyProvider = {
    ref: inner.ref,
    generateDataKey: (c) => (calls.generate++, contexts.push(c), inner.generateDataKey(c)),
    decryptDataKey: (e, c) => (calls.decrypt++, contexts.push(c), inner.decryptDataKey(e, c)),
  };
  return { keys, calls, contexts };
}

const ctxA = tokenContext({ connectionId: 'conn_a', ownerId: 'owner-1', provider: 'close' });
const ctxB = tokenContext({ connectionId: 'conn_b', ownerId: 'owner-1', provider: 'close' });
const providers = ['copper', 'capsule', 'close'] as const;
const contextOf = (i: number) =>
  tokenContext({ connectionId: `conn_${i}`, ownerId: `owner-${i % 97}`, provider: providers[i % 3]! });

const HOUR = 3600_000;
const DAY = 24 * HOUR;

/**
 * Written by the v1 envelope (one data key per ciphertext, before the key
 * hierarchy) under this master key and `v1Context`: items like it stay in the
 * table until their next token write.
 */
const V1_MASTER = 'BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=';
const v1Context = tokenContext({ connectionId: 'conn_v1', ownerId: 'owner-1', provider: 'close' });
const V1_STORED =
  'v1.local.dUyuQU4_oloNsuLbF6TQ893RnA7cY1oW1Z6ftiofGpmxrx7QjWyx3FuGFJ00oYb1OwJv9kPWCQQ6Hf-j.' +
  '3cGXbr3awYYjZIsDUIvx4Ago3JOLpRjilj3LP57iW6BWRZrppqaUw2frmPTKpGG_Q1FjQL3jsZ0UawaVkzBEr3LYVunJrWre30_mXaSETHZY0jA';
const V1_PLAINTEXT = '{"accessToken":"V1-ACCESS","refreshToken":"V1-REFRESH"}';

describe('envelope encryption (v2: intermediate key per CRM and day, HKDF per ciphertext)', () => {
  it('round-trips token material, and the stored form holds no plaintext', async () => {
    const envelope = new Envelope(countingKeys().keys);
    const stored = await envelope.encrypt('{"accessToken":"CANARY-ACCESS"}', ctxA);
    expect(stored).not.toContain('CANARY');
    expect(stored.startsWith('v2.local.')).toBe(true);
    expect(stored.split('.')).toHaveLength(6);
    expect(await envelope.decrypt(stored, ctxA)).toBe('{"accessToken":"CANARY-ACCESS"}');
  });

  it('gives each ciphertext its own salt: the same tokens twice are two different ciphertexts', async () => {
    const envelope = new Envelope(countingKeys().keys);
    const [one, two] = [await envelope.encrypt('same', ctxA), await envelope.encrypt('same', ctxA)];
    expect(one.split('.')[3]).toBe(two.split('.')[3]); // the same intermediate key
    expect(one.split('.')[4]).not.toBe(two.split('.')[4]); // another salt, so another derived key
    expect(await envelope.decrypt(two, ctxA)).toBe('same');
  });

  it("refuses a ciphertext copied into another connection's item (security.md row 13)", async () => {
    const shared = new LocalKeyProvider(randomBytes(32).toString('base64'));
    const ring = new MemoryKeyRing();
    const a = new Envelope(shared, undefined, undefined, ring);
    const stored = await a.encrypt('secret', ctxA);
    // Same CRM, so the same intermediate key: only the derivation and the associated data tell them apart.
    // A cold reader (no cache) and a warm one both refuse every other context.
    for (const other of [ctxB, { ...ctxA, ownerId: 'owner-2' }, { ...ctxA, provider: 'capsule' }]) {
      await expect(
        new Envelope(shared, undefined, undefined, ring).decrypt(stored, other),
      ).rejects.toBeInstanceOf(DecryptionFailed);
      await expect(a.decrypt(stored, other)).rejects.toBeInstanceOf(DecryptionFailed);
    }
    expect(await a.decrypt(stored, ctxA)).toBe('secret');
  });

  it('refuses tampered, truncated or foreign ciphertexts', async () => {
    const keys = new LocalKeyProvider(randomBytes(32).toString('base64'));
    const envelope = new Envelope(keys);
    const stored = await envelope.encrypt('secret', ctxA);
    const parts = stored.split('.');
    const flip = (i: number) => {
      const bytes = Buffer.from(parts[i] as string, 'base64url');
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
      return [...parts.slice(0, i), bytes.toString('base64url'), ...parts.slice(i + 1)].join('.');
    };
    // The wrapped key, the salt, the ciphertext: each change fails, warm (cached key) and cold.
    const otherSlot = [...parts.slice(0, 2), '2020-01-01T00:00:00Z', ...parts.slice(3)].join('.');
    for (const tampered of [flip(3), flip(4), flip(5), otherSlot]) {
      await expect(envelope.decrypt(tampered, ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
      await expect(new Envelope(keys).decrypt(tampered, ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
    }
    await expect(envelope.decrypt(['v1', ...parts.slice(1)].join('.'), ctxA)).rejects.toBeInstanceOf(
      DecryptionFailed,
    );
    await expect(envelope.decrypt(parts.slice(0, 5).join('.'), ctxA)).rejects.toBeInstanceOf(
      DecryptionFailed,
    );
    await expect(envelope.decrypt(['v2', 'kms', ...parts.slice(2)].join('.'), ctxA)).rejects.toBeInstanceOf(
      DecryptionFailed,
    );
    await expect(envelope.decrypt('v2.local.s.x.y.z', ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
    await expect(envelope.decrypt('garbage', ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
    const otherMaster = new Envelope(new LocalKeyProvider(randomBytes(32).toString('base64')));
    await expect(otherMaster.decrypt(stored, ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
  });

  it('asks KMS only under a context the key policy and the roles allow: {purpose, provider, keySlot}', async () => {
    const { keys, contexts } = countingKeys();
    const writer = new Envelope(keys, undefined, () => Date.UTC(2026, 11, 2, 7, 30));
    const stored = await writer.encrypt('secret', ctxA);
    expect(stored.split('.')[2]).toBe('2026-12-02T00:00:00Z');
    await new Envelope(keys, undefined, undefined, new MemoryKeyRing()).decrypt(stored, ctxA);
    const keyContext = { purpose: TOKEN_PURPOSE, provider: 'close', keySlot: '2026-12-02T00:00:00Z' };
    expect(contexts).toEqual([keyContext, keyContext]);
    for (const c of contexts) expect(Object.keys(c).every((k) => TOKEN_CONTEXT_KEYS.includes(k))).toBe(true);
  });
});

describe('v1 ciphertexts (one data key each) stay readable', () => {
  it('decrypts a v1 item written before the key hierarchy, and writes it back as v2', async () => {
    const { keys, calls } = countingKeys(V1_MASTER);
    const envelope = new Envelope(keys);
    expect(await envelope.decrypt(V1_STORED, v1Context)).toBe(V1_PLAINTEXT);
    expect(calls.decrypt).toBe(1);
    // Warm: the v1 data key is cached as before.
    expect(await envelope.decrypt(V1_STORED, v1Context)).toBe(V1_PLAINTEXT);
    expect(calls.decrypt).toBe(1);
    const rewritten = await envelope.encrypt(V1_PLAINTEXT, v1Context);
    expect(rewritten.startsWith('v2.local.')).toBe(true);
    expect(await new Envelope(keys).decrypt(rewritten, v1Context)).toBe(V1_PLAINTEXT);
  });

  it('refuses a v1 ciphertext moved to another item, cold and warm (row 13)', async () => {
    const keys = new LocalKeyProvider(V1_MASTER);
    const warm = new Envelope(keys);
    await warm.decrypt(V1_STORED, v1Context);
    for (const other of [
      { ...v1Context, connectionId: 'conn_other' },
      { ...v1Context, ownerId: 'owner-2' },
    ]) {
      await expect(new Envelope(keys).decrypt(V1_STORED, other)).rejects.toBeInstanceOf(DecryptionFailed);
      await expect(warm.decrypt(V1_STORED, other)).rejects.toBeInstanceOf(DecryptionFailed);
    }
  });
});

describe('KMS requests grow with containers and time, not with connections or fetches', () => {
  it('2,000 connections, one fetch each, one cold container: 3 Decrypts (v1 items: 2,000)', async () => {
    const n = 2_000;
    const master = randomBytes(32).toString('base64');
    const writerKeys = countingKeys(master);
    const writer = new Envelope(writerKeys.keys);
    const v1: string[] = [];
    const v2: string[] = [];
    for (let i = 0; i < n; i++) {
      v1.push(await encryptV1(writerKeys.keys, `tokens-${i}`, contextOf(i)));
      v2.push(await writer.encrypt(`tokens-${i}`, contextOf(i)));
    }
    expect(writerKeys.calls.generate).toBe(n + 3); // v1: one data key each; v2: one intermediate key per CRM

    const before = countingKeys(master);
    const after = countingKeys(master);
    const coldBefore = new Envelope(before.keys, undefined, undefined, new MemoryKeyRing());
    const coldAfter = new Envelope(after.keys, undefined, undefined, new MemoryKeyRing());
    for (let i = 0; i < n; i++) {
      expect(await coldBefore.decrypt(v1[i] as string, contextOf(i))).toBe(`tokens-${i}`);
      expect(await coldAfter.decrypt(v2[i] as string, contextOf(i))).toBe(`tokens-${i}`);
    }
    expect(before.calls).toEqual({ generate: 0, decrypt: n });
    expect(after.calls).toEqual({ generate: 0, decrypt: 3 });
  }, 60_000);

  it('100 writer containers sharing the key ring: one key per CRM, so a reader still needs 3 Decrypts', async () => {
    const master = randomBytes(32).toString('base64');
    const ring = new MemoryKeyRing();
    const writers = Array.from({ length: 100 }, () => countingKeys(master));
    const stored: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const w = writers[i % 100]!;
      stored.push(await new Envelope(w.keys, undefined, undefined, ring).encrypt(`t${i}`, contextOf(i)));
    }
    const total = writers.reduce((s, w) => ({ g: s.g + w.calls.generate, d: s.d + w.calls.decrypt }), {
      g: 0,
      d: 0,
    });
    expect(total.g).toBe(3);
    expect(new Set(stored.map((s) => s.split('.')[3])).size).toBe(3);
    const reader = countingKeys(master);
    const cold = new Envelope(reader.keys);
    for (let i = 0; i < 3000; i++) await cold.decrypt(stored[i] as string, contextOf(i));
    expect(reader.calls.decrypt).toBe(3);
  }, 60_000);

  it('two writers racing for a new slot end up with the first stored key', async () => {
    const master = randomBytes(32).toString('base64');
    const ring = new MemoryKeyRing();
    const [a, b] = [countingKeys(master), countingKeys(master)];
    const [sa, sb] = await Promise.all([
      new Envelope(a.keys, undefined, undefined, ring).encrypt('a', ctxA),
      new Envelope(b.keys, undefined, undefined, ring).encrypt('b', ctxB),
    ]);
    expect(a.calls.generate + b.calls.generate).toBe(2); // both missed the ring
    expect(sa.split('.')[3]).toBe(sb.split('.')[3]); // the loser took the winner's key (one Decrypt)
    expect(a.calls.decrypt + b.calls.decrypt).toBe(1);
  });

  it("does not write with a key copied into today's ring slot from another day", async () => {
    const master = randomBytes(32).toString('base64');
    const ring = new MemoryKeyRing();
    let now = 10 * DAY;
    const yesterday = await new Envelope(new LocalKeyProvider(master), undefined, () => now, ring).encrypt(
      'y',
      ctxA,
    );
    // Someone who can write the table (and may hold yesterday's key) plants it as today's.
    now += DAY;
    const planted = Buffer.from(yesterday.split('.')[3] as string, 'base64url');
    await ring.putIfAbsent(`local#${TOKEN_PURPOSE}#close#1970-01-12T00:00:00Z`, planted);
    const writer = countingKeys(master);
    const today = await new Envelope(writer.keys, undefined, () => now, ring).encrypt('t', ctxA);
    expect(writer.calls).toEqual({ generate: 1, decrypt: 1 }); // the planted key tried as today's, refused
    expect(today.split('.')[3]).not.toBe(yesterday.split('.')[3]);
    expect(await new Envelope(new LocalKeyProvider(master)).decrypt(today, ctxA)).toBe('t');
  });

  it('writes with a key of its own when the ring cannot be reached', async () => {
    const { keys, calls } = countingKeys();
    const unreachable = {
      get: () => Promise.reject(new Error('table unreachable')),
      putIfAbsent: () => Promise.reject(new Error('table unreachable')),
    };
    const envelope = new Envelope(keys, undefined, undefined, unreachable);
    const stored = await envelope.encrypt('secret', ctxA);
    await envelope.encrypt('again', ctxA); // the own key is kept like any other
    expect(calls).toEqual({ generate: 1, decrypt: 0 });
    expect(await new Envelope(keys).decrypt(stored, ctxA)).toBe('secret');
  });

  it("writes with its own key when the ring's cannot be opened (KMS key or master key changed)", async () => {
    const ring = new MemoryKeyRing();
    await new Envelope(
      new LocalKeyProvider(randomBytes(32).toString('base64')),
      undefined,
      undefined,
      ring,
    ).encrypt('old key', ctxA);
    const keys = new LocalKeyProvider(randomBytes(32).toString('base64'));
    const stored = await new Envelope(keys, undefined, undefined, ring).encrypt('new key', ctxA);
    expect(await new Envelope(keys).decrypt(stored, ctxA)).toBe('new key');
  });
});

describe('bounds on the cached keys (fake clock)', () => {
  it('a warm reader makes no key call per request until a bound is reached', async () => {
    const { keys, calls } = countingKeys();
    const stored = await new Envelope(keys).encrypt('secret', ctxA);
    const reader = new Envelope(keys, undefined, undefined, new MemoryKeyRing());
    for (let i = 0; i < 1000; i++) await reader.decrypt(stored, ctxA);
    expect(calls).toEqual({ generate: 1, decrypt: 1 });
  });

  it('bounds an intermediate key by uses and by age, for readers and writers', async () => {
    const { keys, calls } = countingKeys();
    let now = 10 * DAY;
    const limits = { maxAgeMs: HOUR, maxUses: 3, maxEntries: 10 };
    const ring = new MemoryKeyRing();
    const writer = new Envelope(keys, limits, () => now, ring);
    const stored = await writer.encrypt('secret', ctxA); // use 1 of the generated key
    await writer.decrypt(stored, ctxA); // use 2
    await writer.decrypt(stored, ctxA); // use 3
    expect(calls).toEqual({ generate: 1, decrypt: 0 });
    await writer.decrypt(stored, ctxA); // used up: KMS again
    expect(calls.decrypt).toBe(1);
    now += HOUR + 1;
    await writer.decrypt(stored, ctxA); // too old: KMS again
    expect(calls.decrypt).toBe(2);
    now += HOUR + 1;
    await writer.encrypt('again', ctxA); // the writer's key too: unwrapped again from the ring, not regenerated
    expect(calls).toEqual({ generate: 1, decrypt: 3 });
  });

  it('rotates: a new intermediate key per CRM each day; older ciphertexts stay readable', async () => {
    const { keys, calls } = countingKeys();
    let now = 10 * DAY + 23 * HOUR;
    const envelope = new Envelope(keys, undefined, () => now);
    const today = await envelope.encrypt('today', ctxA);
    now += 2 * HOUR; // the next UTC day
    const tomorrow = await envelope.encrypt('tomorrow', ctxA);
    expect(calls.generate).toBe(2);
    expect(today.split('.')[3]).not.toBe(tomorrow.split('.')[3]);
    expect(today.split('.')[2]).toBe('1970-01-11T00:00:00Z');
    expect(tomorrow.split('.')[2]).toBe('1970-01-12T00:00:00Z');
    expect(await envelope.decrypt(today, ctxA)).toBe('today');
    expect(await envelope.decrypt(tomorrow, ctxA)).toBe('tomorrow');
  });

  it('keeps at most maxEntries keys, least recently used evicted first', async () => {
    const { keys, calls } = countingKeys();
    const writer = new Envelope(keys);
    const stored = await Promise.all(providers.map((p) => writer.encrypt(p, { ...ctxA, provider: p })));
    const reader = new Envelope(
      keys,
      { maxAgeMs: HOUR, maxUses: 1000, maxEntries: 2 },
      undefined,
      new MemoryKeyRing(),
    );
    for (const [i, p] of providers.entries())
      await reader.decrypt(stored[i] as string, { ...ctxA, provider: p });
    expect(calls.decrypt).toBe(3);
    await reader.decrypt(stored[2] as string, { ...ctxA, provider: 'close' }); // kept
    expect(calls.decrypt).toBe(3);
    await reader.decrypt(stored[0] as string, { ...ctxA, provider: 'copper' }); // evicted
    expect(calls.decrypt).toBe(4);
  });
});

describe("with KMS (the real SDK against the KMS double, which checks the stack's context condition)", () => {
  let kms: KmsDouble;
  let keys: KmsKeyProvider;
  beforeAll(async () => {
    kms = await startKmsDouble();
    const client = new KMSClient({
      endpoint: kms.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    keys = new KmsKeyProvider(client, kms.keyId);
  });
  afterAll(() => kms?.close());

  it('v2 round-trips, v1 items still open, and KMS saw only allowed contexts', async () => {
    kms.reset();
    const stored = await new Envelope(keys).encrypt('secret', ctxA);
    expect(stored.startsWith('v2.kms.')).toBe(true);
    expect(await new Envelope(keys).decrypt(stored, ctxA)).toBe('secret');
    await expect(new Envelope(keys).decrypt(stored, ctxB)).rejects.toBeInstanceOf(DecryptionFailed);
    const v1 = await encryptV1(keys, 'old', ctxA);
    expect(await new Envelope(keys).decrypt(v1, ctxA)).toBe('old');
    expect(kms.calls).toMatchObject({ GenerateDataKey: 2, Decrypt: 3 });
    expect(kms.contexts).toContainEqual({
      purpose: TOKEN_PURPOSE,
      provider: 'close',
      keySlot: stored.split('.')[2],
    });
  });

  it('refuses a context outside the condition the stack puts on the key, as KMS would', async () => {
    const outside = new Envelope(keys, undefined, undefined, new MemoryKeyRing(), {
      scopeKeys: ['purpose', 'provider', 'connectionId', 'tenant'],
      rotationMs: DAY,
      slotKey: 'keySlot',
    });
    await expect(outside.encrypt('secret', { ...ctxA, tenant: 't1' })).rejects.toMatchObject({
      name: 'AccessDeniedException',
    });
  });
});
