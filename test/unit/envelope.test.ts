import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  DecryptionFailed,
  type EncryptionContext,
  Envelope,
  type KeyProvider,
  LocalKeyProvider,
} from '../../functions/adapters/kms/envelope.ts';

/** Counts data-key operations of a real local key provider. */
function countingKeys() {
  const inner = new LocalKeyProvider(randomBytes(32).toString('base64'));
  const calls = { generate: 0, decrypt: 0 };
  const keys: KeyProvider = {
    ref: inner.ref,
    generateDataKey: (c) => (calls.generate++, inner.generateDataKey(c)),
    decryptDataKey: (e, c) => (calls.decrypt++, inner.decryptDataKey(e, c)),
  };
  return { keys, calls };
}

const ctxA: EncryptionContext = { connectionId: 'conn_a', ownerId: 'owner-1', provider: 'close' };
const ctxB: EncryptionContext = { connectionId: 'conn_b', ownerId: 'owner-1', provider: 'close' };

describe('envelope encryption', () => {
  it('round-trips token material, and the stored form holds no plaintext', async () => {
    const { keys } = countingKeys();
    const envelope = new Envelope(keys);
    const stored = await envelope.encrypt('{"accessToken":"CANARY-ACCESS"}', ctxA);
    expect(stored).not.toContain('CANARY');
    expect(stored.startsWith('v1.local.')).toBe(true);
    expect(await envelope.decrypt(stored, ctxA)).toBe('{"accessToken":"CANARY-ACCESS"}');
  });

  it("refuses a ciphertext copied into another connection's item (security.md row 13)", async () => {
    const shared = new LocalKeyProvider(randomBytes(32).toString('base64'));
    const a = new Envelope(shared);
    const stored = await a.encrypt('secret', ctxA);
    // A cold reader (no cache) and a warm one both refuse the swapped context.
    await expect(new Envelope(shared).decrypt(stored, ctxB)).rejects.toBeInstanceOf(DecryptionFailed);
    await expect(a.decrypt(stored, ctxB)).rejects.toBeInstanceOf(DecryptionFailed);
    await expect(a.decrypt(stored, { ...ctxA, ownerId: 'owner-2' })).rejects.toBeInstanceOf(DecryptionFailed);
  });

  it('refuses tampered or foreign ciphertexts', async () => {
    const keys = new LocalKeyProvider(randomBytes(32).toString('base64'));
    const envelope = new Envelope(keys);
    const stored = await envelope.encrypt('secret', ctxA);
    const parts = stored.split('.');
    const sealed = Buffer.from(parts[3] as string, 'base64url');
    sealed[sealed.length - 1] = (sealed[sealed.length - 1] as number) ^ 1;
    const tampered = [...parts.slice(0, 3), sealed.toString('base64url')].join('.');
    await expect(envelope.decrypt(tampered, ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
    await expect(envelope.decrypt('v1.kms.x.y', ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
    await expect(envelope.decrypt('garbage', ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
    const otherMaster = new Envelope(new LocalKeyProvider(randomBytes(32).toString('base64')));
    await expect(otherMaster.decrypt(stored, ctxA)).rejects.toBeInstanceOf(DecryptionFailed);
  });

  it('caches data keys: a warm reader makes no key call per request', async () => {
    const { keys, calls } = countingKeys();
    const envelope = new Envelope(keys);
    const stored = await envelope.encrypt('secret', ctxA);
    const reader = new Envelope(keys);
    for (let i = 0; i < 1000; i++) await reader.decrypt(stored, ctxA);
    expect(calls).toEqual({ generate: 1, decrypt: 1 });
    // Re-encrypting the same connection reuses its data key.
    await envelope.encrypt('secret-2', ctxA);
    expect(calls.generate).toBe(1);
  });

  it('bounds the cache by age and by uses', async () => {
    const { keys, calls } = countingKeys();
    let now = 0;
    const envelope = new Envelope(keys, { maxAgeMs: 1000, maxUses: 3, maxEntries: 10 }, () => now);
    const stored = await envelope.encrypt('secret', ctxA); // use 1
    await envelope.decrypt(stored, ctxA); // use 2
    await envelope.decrypt(stored, ctxA); // use 3
    expect(calls.decrypt).toBe(0);
    await envelope.decrypt(stored, ctxA); // exhausted: decrypt again
    expect(calls.decrypt).toBe(1);
    now += 2000;
    await envelope.decrypt(stored, ctxA); // too old: decrypt again
    expect(calls.decrypt).toBe(2);
  });
});
