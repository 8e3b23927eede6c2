import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { packTokens, unpackTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';
import {
  DecryptionFailed,
  type DataKey,
  Envelope,
  type KeyProvider,
  LocalKeyProvider,
  encryptV1,
} from '../../functions/adapters/kms/envelope.ts';
import { tokenContext } from '../../functions/core/domain/token-set.ts';
import { storedItemsText } from '../support/stored-items.ts';

const context = tokenContext({ connectionId: 'conn_pack', ownerId: 'owner-1', provider: 'close' });
const local = new LocalKeyProvider(randomBytes(32).toString('base64'));

/** A stand-in for KMS with its ref and its wrapped-key size (a 184-byte CiphertextBlob), keys kept in memory. */
function kmsSized(): KeyProvider {
  const keys = new Map<string, Buffer>();
  return {
    ref: 'kms',
    async generateDataKey(): Promise<DataKey> {
      const key = { plaintext: randomBytes(32), encrypted: randomBytes(184) };
      keys.set(key.encrypted.toString('hex'), key.plaintext);
      return key;
    },
    async decryptDataKey(encrypted) {
      const plaintext = keys.get(encrypted.toString('hex'));
      if (!plaintext) throw new DecryptionFailed();
      return plaintext;
    },
  };
}

/** A token set with tokens of `length` characters each, as a connection stores one. */
const tokenSet = (length: number) =>
  JSON.stringify({ accessToken: 'a'.repeat(length), refreshToken: 'r'.repeat(length) });

const form = (packed: Uint8Array) => packed[0];

describe('packed tokens: what the envelope writes', () => {
  it.each([
    ['local', () => local],
    ['kms', kmsSized],
  ])(
    'v2 (%s ref) packs into its binary layout and unpacks to the same text, which decrypts',
    async (_, keys) => {
      const envelope = new Envelope(keys());
      const text = await envelope.encrypt(tokenSet(32), context);
      const packed = packTokens(text);
      expect(form(packed)).toBe(0x02);
      expect(unpackTokens(packed)).toBe(text);
      expect(await envelope.decrypt(unpackTokens(packed), context)).toBe(tokenSet(32));
    },
  );

  it.each([
    ['local', () => local, 1],
    ['local', () => local, 32],
    ['local', () => local, 400],
    ['kms', kmsSized, 1],
    ['kms', kmsSized, 32],
    ['kms', kmsSized, 400],
  ])(
    'a v2 envelope (%s ref, %i-character tokens) is at least 20%% smaller packed than as text',
    async (_, keys, length) => {
      const text = await new Envelope(keys()).encrypt(tokenSet(length), context);
      const packed = packTokens(text);
      expect(form(packed)).toBe(0x02);
      expect(packed.byteLength).toBeLessThanOrEqual(0.8 * Buffer.byteLength(text));
    },
  );

  it('a KMS v2 envelope of 32-character tokens: 469 bytes as text, 340 packed; each more token character 1 byte, not 4/3', async () => {
    const envelope = new Envelope(kmsSized());
    const short = await envelope.encrypt(tokenSet(32), context);
    const long = await envelope.encrypt(tokenSet(32 + 30), context);
    // A 100-byte token set sealed (iv 12, tag 16): 128 bytes. As text: `v2.kms.` 7, the slot and a dot 21,
    // the key 246 and salt 22 as base64url with their dots, the sealed 171. Packed: form 1, ref 1 + 3,
    // slot 4, key 2 + 184, salt 1 + 16, sealed 128.
    expect(Buffer.byteLength(short)).toBe(7 + 21 + 247 + 23 + 171);
    expect(packTokens(short).byteLength).toBe(1 + 4 + 4 + 186 + 17 + 128);
    // 60 more plaintext characters: 80 more as text, 60 more packed.
    expect(Buffer.byteLength(long) - Buffer.byteLength(short)).toBe(80);
    expect(packTokens(long).byteLength - packTokens(short).byteLength).toBe(60);
  });

  it('v1 (read only, still in items written before) packs into its layout and decrypts after unpacking', async () => {
    const text = await encryptV1(local, tokenSet(32), context);
    const packed = packTokens(text);
    expect(form(packed)).toBe(0x01);
    expect(unpackTokens(packed)).toBe(text);
    expect(await new Envelope(local).decrypt(unpackTokens(packed), context)).toBe(tokenSet(32));
    expect(packed.byteLength).toBeLessThan(0.8 * Buffer.byteLength(text));
  });
});

describe('packed tokens: any other text is stored as it is', () => {
  const slot = '2026-01-01T00:00:00Z';
  const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64url');
  const odd: [string, string][] = [
    ['empty', ''],
    ['no parts', 'v2'],
    ['too few parts', `v2.local.${slot}.${b64(60)}.${b64(16)}`],
    ['too many parts', `v2.local.${slot}.${b64(60)}.${b64(16)}.${b64(40)}.x`],
    ['unknown version', `v3.local.${slot}.${b64(60)}.${b64(16)}.${b64(40)}`],
    [
      'not canonical base64url (AB decodes to one byte, which encodes as AA)',
      `v2.local.${slot}.AB.${b64(16)}.${b64(40)}`,
    ],
    ['padded base64', `v2.local.${slot}.${b64(60)}.${Buffer.alloc(16).toString('base64')}.${b64(40)}`],
    ['a slot that is not a date', `v2.local.today.${b64(60)}.${b64(16)}.${b64(40)}`],
    ['a slot with milliseconds', `v2.local.2026-01-01T00:00:00.000Z.${b64(60)}.${b64(16)}.${b64(40)}`],
    ['a slot before 1970', `v2.local.1969-12-31T00:00:00Z.${b64(60)}.${b64(16)}.${b64(40)}`],
    ['a slot after 2106', `v2.local.2107-01-01T00:00:00Z.${b64(60)}.${b64(16)}.${b64(40)}`],
    ['a ref of 256 bytes', `v2.${'r'.repeat(256)}.${slot}.${b64(60)}.${b64(16)}.${b64(40)}`],
    ['a wrapped key of 65,536 bytes', `v2.local.${slot}.${b64(65_536)}.${b64(16)}.${b64(40)}`],
    ['a salt of 256 bytes', `v2.local.${slot}.${b64(60)}.${b64(256)}.${b64(40)}`],
    ['v1 with parts that are not base64url bytes', 'v1.local.unused.unused'],
    ['what an unpacked damaged attribute reads as', 'unreadable.AgAB'],
    ['plaintext JSON', tokenSet(8)],
    ['non-ASCII text', '{"accessToken":"ü😀 ✓"}'],
  ];

  it.each(odd)('%s: round-trips exactly, in the text form', (_, text) => {
    const packed = packTokens(text);
    expect(form(packed)).toBe(0x00);
    expect(unpackTokens(packed)).toBe(text);
  });

  it.each([
    ['empty parts', 'v2.local.2026-01-01T00:00:00Z...'],
    ['a non-ASCII ref', `v2.ключ.2026-01-01T00:00:00Z.${Buffer.alloc(3).toString('base64url')}.AA.AAAA`],
    ['v1 with empty parts', 'v1.kms..'],
  ])('%s: still the envelope layout, and round-trips exactly', (_, text) => {
    const packed = packTokens(text);
    expect(form(packed)).not.toBe(0x00);
    expect(unpackTokens(packed)).toBe(text);
  });

  it('random texts made of envelope characters all round-trip (2,000 of them)', () => {
    const alphabet = [
      'v1.',
      'v2.',
      'local.',
      'kms.',
      '2026-01-01T00:00:00Z.',
      '.',
      'A',
      'Qg',
      '_-',
      'w==',
      'é',
      'x',
    ];
    let seed = 42;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31);
    let packedForms = 0;
    for (let i = 0; i < 2000; i++) {
      const text = Array.from({ length: next() % 12 }, () => alphabet[next() % alphabet.length]).join('');
      const packed = packTokens(text);
      if (form(packed) !== 0x00) packedForms++;
      expect(unpackTokens(packed)).toBe(text);
    }
    // Some of them are envelopes by shape, so both paths ran.
    expect(packedForms).toBeGreaterThan(0);
  });

  it('refuses a string UTF-8 cannot hold (a lone surrogate) rather than store it altered', () => {
    expect(() => packTokens('v2.local.\ud800')).toThrow(TypeError);
  });
});

describe('packed tokens: a damaged attribute', () => {
  it.each([
    ['empty', new Uint8Array()],
    ['an unknown form', Uint8Array.from([0x07, 1, 2, 3])],
    ['a v2 cut short in its ref', Uint8Array.from([0x02, 5, 0x6c])],
    ['a v2 cut short in its wrapped key', Uint8Array.from([0x02, 0, 0, 0, 0, 0, 0, 60, 1, 2])],
    ['a v1 cut short in its data key', Uint8Array.from([0x01, 0, 1, 0])],
  ])('%s: reads as text the envelope refuses, never throws', async (_, bytes) => {
    const text = unpackTokens(bytes);
    expect(text).toBe(`unreadable.${Buffer.from(bytes).toString('base64url')}`);
    await expect(new Envelope(local).decrypt(text, context)).rejects.toBeInstanceOf(DecryptionFailed);
  });
});

describe("the leak canary's view of stored items", () => {
  it('sees a plaintext token held in Binary, which JSON.stringify alone writes as numbers', () => {
    const secret = 'PLAINTEXT-CANARY-0123456789';
    const items = [{ pk: 'CONN#x', tokens: packTokens(JSON.stringify({ accessToken: secret })) }];
    expect(JSON.stringify(items)).not.toContain(secret);
    expect(storedItemsText(items)).toContain(secret);
  });

  it('sees one in any Binary attribute, not only tokens', () => {
    const secret = 'PLAINTEXT-CANARY-9876543210';
    expect(storedItemsText([{ other: Buffer.from(`x${secret}y`) }])).toContain(secret);
  });

  it('shows an encrypted token set as its envelope text', async () => {
    const text = await new Envelope(local).encrypt(tokenSet(32), context);
    expect(storedItemsText([{ tokens: packTokens(text) }])).toContain(text);
  });
});
