/**
 * Envelope encryption of token material.
 *
 * A data key from KMS (or, locally, from a master key in the same format)
 * encrypts the tokens with AES-256-GCM. The KMS encryption context and the
 * GCM associated data both name the connection, owner and provider, so a
 * ciphertext copied into another item fails to decrypt (security.md row 13).
 * Decrypted data keys are cached with bounds on age and uses, so a warm
 * function makes no KMS call per request.
 *
 * Stored form: `v1.<keyRef>.<encryptedDataKey>.<iv>.<ciphertext+tag>` (base64url parts).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';

export type EncryptionContext = Readonly<Record<string, string>>;

/** Canonical form of a context: keys sorted, so KMS and GCM see the same bytes. */
export const canonicalContext = (context: EncryptionContext): string =>
  JSON.stringify(
    Object.keys(context)
      .sort()
      .map((k) => [k, context[k]]),
  );

export interface DataKey {
  plaintext: Buffer;
  encrypted: Buffer;
}

/** Where data keys come from: KMS, or the local master key. */
export interface KeyProvider {
  /** Short id stored with each ciphertext (`kms` or `local`). */
  readonly ref: string;
  generateDataKey(context: EncryptionContext): Promise<DataKey>;
  decryptDataKey(encrypted: Buffer, context: EncryptionContext): Promise<Buffer>;
}

export class DecryptionFailed extends Error {
  constructor(options?: { cause?: unknown }) {
    super('Stored token material could not be decrypted for this connection', options);
    this.name = 'DecryptionFailed';
  }
}

export class KmsKeyProvider implements KeyProvider {
  readonly ref = 'kms';
  constructor(
    private readonly kms: KMSClient,
    private readonly keyId: string,
  ) {}

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const out = await this.kms.send(
      new GenerateDataKeyCommand({
        KeyId: this.keyId,
        KeySpec: 'AES_256',
        EncryptionContext: { ...context },
      }),
    );
    if (!out.Plaintext || !out.CiphertextBlob) throw new Error('KMS GenerateDataKey returned no key');
    return { plaintext: Buffer.from(out.Plaintext), encrypted: Buffer.from(out.CiphertextBlob) };
  }

  async decryptDataKey(encrypted: Buffer, context: EncryptionContext): Promise<Buffer> {
    try {
      const out = await this.kms.send(
        new DecryptCommand({
          CiphertextBlob: encrypted,
          KeyId: this.keyId,
          EncryptionContext: { ...context },
        }),
      );
      if (!out.Plaintext) throw new Error('KMS Decrypt returned no key');
      return Buffer.from(out.Plaintext);
    } catch (err) {
      if (
        (err as Error).name === 'InvalidCiphertextException' ||
        (err as Error).name === 'IncorrectKeyException'
      ) {
        throw new DecryptionFailed({ cause: err });
      }
      throw err;
    }
  }
}

/** AES-256-GCM seal/open with associated data: `iv(12) | tag(16) | ciphertext`. */
function seal(key: Buffer, plaintext: Buffer, aad: string): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), ct]);
}

function open(key: Buffer, sealed: Buffer, aad: string): Buffer {
  if (sealed.length < 28) throw new DecryptionFailed();
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(sealed.subarray(12, 28));
    return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()]);
  } catch (err) {
    throw new DecryptionFailed({ cause: err });
  }
}

/** The local stand-in for KMS: a 32-byte master key wraps data keys, bound to the same context. */
export class LocalKeyProvider implements KeyProvider {
  readonly ref = 'local';
  private readonly master: Buffer;
  constructor(masterKeyBase64: string) {
    this.master = Buffer.from(masterKeyBase64, 'base64');
    if (this.master.length !== 32) throw new Error('local master key must be 32 bytes');
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const plaintext = randomBytes(32);
    return { plaintext, encrypted: seal(this.master, plaintext, canonicalContext(context)) };
  }

  async decryptDataKey(encrypted: Buffer, context: EncryptionContext): Promise<Buffer> {
    return open(this.master, encrypted, canonicalContext(context));
  }
}

export interface DataKeyCacheLimits {
  /** How long a decrypted data key may be used. */
  maxAgeMs: number;
  /** How many encryptions plus decryptions one cached key may serve. */
  maxUses: number;
  /** How many keys are kept (least recently used evicted first). */
  maxEntries: number;
}

/**
 * One hour or 10,000 uses per data key: a warm function decrypts each connection's key at most once an
 * hour, which keeps KMS cost flat (README, "Deploy to AWS"), while a key revoked in KMS stops working
 * here within the hour.
 */
export const DEFAULT_CACHE_LIMITS: DataKeyCacheLimits = {
  maxAgeMs: 3600_000,
  maxUses: 10_000,
  maxEntries: 1000,
};

interface CachedKey {
  plaintext: Buffer;
  encrypted: Buffer;
  createdAt: number;
  uses: number;
}

export class Envelope {
  /** Cache keyed by context: one data key per connection. */
  private readonly cache = new Map<string, CachedKey>();

  constructor(
    private readonly keys: KeyProvider,
    private readonly limits: DataKeyCacheLimits = DEFAULT_CACHE_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Encrypts `plaintext` bound to `context`, reusing this context's cached data key while it is within bounds. */
  async encrypt(plaintext: string, context: EncryptionContext): Promise<string> {
    const aad = canonicalContext(context);
    let key = this.take(aad);
    if (!key) {
      const fresh = await this.keys.generateDataKey(context);
      key = this.remember(aad, fresh.plaintext, fresh.encrypted);
    }
    const sealed = seal(key.plaintext, Buffer.from(plaintext, 'utf8'), aad);
    return ['v1', this.keys.ref, key.encrypted.toString('base64url'), sealed.toString('base64url')].join('.');
  }

  /** Decrypts what `encrypt` made for the same context; throws `DecryptionFailed` for any other context. */
  async decrypt(stored: string, context: EncryptionContext): Promise<string> {
    const parts = stored.split('.');
    if (parts.length !== 4 || parts[0] !== 'v1' || parts[1] !== this.keys.ref) throw new DecryptionFailed();
    const encrypted = Buffer.from(parts[2] as string, 'base64url');
    const sealed = Buffer.from(parts[3] as string, 'base64url');
    const aad = canonicalContext(context);
    let key = this.take(aad);
    if (!key || !key.encrypted.equals(encrypted)) {
      const plaintext = await this.keys.decryptDataKey(encrypted, context);
      key = this.remember(aad, plaintext, encrypted);
    }
    return open(key.plaintext, sealed, aad).toString('utf8');
  }

  private take(aad: string): CachedKey | undefined {
    const key = this.cache.get(aad);
    if (!key) return undefined;
    if (this.now() - key.createdAt > this.limits.maxAgeMs || key.uses >= this.limits.maxUses) {
      this.cache.delete(aad);
      return undefined;
    }
    key.uses++;
    // Re-insert to keep Map order = least recently used first.
    this.cache.delete(aad);
    this.cache.set(aad, key);
    return key;
  }

  private remember(aad: string, plaintext: Buffer, encrypted: Buffer): CachedKey {
    const key: CachedKey = { plaintext, encrypted, createdAt: this.now(), uses: 1 };
    this.cache.set(aad, key);
    while (this.cache.size > this.limits.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    return key;
  }
}
