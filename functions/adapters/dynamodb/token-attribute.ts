/**
 * The stored form of a `tokens` attribute: the envelope's text
 * (functions/adapters/kms/envelope.ts) packed into DynamoDB Binary. The text
 * carries its keys, salt and ciphertext as base64url, 4 characters for every
 * 3 bytes; DynamoDB counts Binary by its raw length, so a packed envelope is
 * about a quarter smaller, and a connection item stays one write unit with
 * longer CRM tokens (docs/costs.md, "Item size"). The rest of the code sees
 * the same string: the store packs on write and unpacks on read.
 *
 * Layout (first byte the form; lengths unsigned, big-endian):
 * - `0x02` v2: ref length (1) | ref (UTF-8) | key slot (4, epoch seconds) |
 *   wrapped key length (2) | wrapped key | salt length (1) | salt | iv, tag, ciphertext (the rest)
 * - `0x01` v1: ref length (1) | ref (UTF-8) | data key length (2) | data key | iv, tag, ciphertext (the rest)
 * - `0x00` any other text, as UTF-8: what does not pack exactly is stored as it is, never altered.
 */

const TEXT = 0x00;
const V1 = 0x01;
const V2 = 0x02;

/** A base64url part as bytes, only if they give back the same text (Node's decoder is lenient). */
function exactBase64url(part: string): Buffer | undefined {
  const bytes = Buffer.from(part, 'base64url');
  return bytes.toString('base64url') === part ? bytes : undefined;
}

/** A key slot (`2026-01-01T00:00:00Z`, as the envelope writes it) as epoch seconds, if it is one exactly. */
function slotSeconds(label: string): number | undefined {
  const ms = Date.parse(label);
  if (!Number.isInteger(ms) || ms < 0 || ms % 1000 !== 0 || ms / 1000 > 0xffff_ffff) return undefined;
  return slotLabel(ms / 1000) === label ? ms / 1000 : undefined;
}

const slotLabel = (seconds: number) => new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

const u8 = (n: number) => Buffer.from([n]);
const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** A short text with its 1-byte length, if it fits. */
function shortText(text: string): Buffer | undefined {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= 0xff ? Buffer.concat([u8(bytes.length), bytes]) : undefined;
}

/** The binary layout of a v2 or v1 envelope, or undefined when the text is not exactly one. */
function packEnvelope(text: string): Buffer | undefined {
  const parts = text.split('.');
  const ref = parts[1] === undefined ? undefined : shortText(parts[1]);
  if (!ref) return undefined;
  if (parts[0] === 'v2' && parts.length === 6) {
    const slot = slotSeconds(parts[2] as string);
    const [wrapped, salt, sealed] = parts.slice(3).map(exactBase64url);
    if (slot === undefined || !wrapped || !salt || !sealed) return undefined;
    if (wrapped.length > 0xffff || salt.length > 0xff) return undefined;
    return Buffer.concat([
      u8(V2),
      ref,
      u32(slot),
      u16(wrapped.length),
      wrapped,
      u8(salt.length),
      salt,
      sealed,
    ]);
  }
  if (parts[0] === 'v1' && parts.length === 4) {
    const key = exactBase64url(parts[2] as string);
    const sealed = exactBase64url(parts[3] as string);
    if (!key || !sealed || key.length > 0xffff) return undefined;
    return Buffer.concat([u8(V1), ref, u16(key.length), key, sealed]);
  }
  return undefined;
}

/** Any text as UTF-8; a string UTF-8 cannot hold (a lone surrogate) is refused, as a String attribute would. */
function packText(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.toString('utf8') !== text) throw new TypeError('tokens are not well-formed Unicode text');
  return Buffer.concat([u8(TEXT), bytes]);
}

/**
 * The envelope's text as stored: a v2 or v1 envelope in its binary layout,
 * anything else as tagged UTF-8. Checked by unpacking, so what is stored always
 * gives back exactly `text`.
 */
export function packTokens(text: string): Uint8Array {
  const packed = packEnvelope(text);
  return packed && unpackTokens(packed) === text ? packed : packText(text);
}

/** Reads a packed attribute from the front; any read past the end marks it malformed. */
class Reader {
  private at = 0;
  malformed = false;
  constructor(private readonly bytes: Buffer) {}

  take(length: number): Buffer {
    if (this.at + length > this.bytes.length) this.malformed = true;
    const out = this.bytes.subarray(this.at, this.at + length);
    this.at += length;
    return out;
  }
  uint(size: 1 | 2 | 4): number {
    const b = this.take(size);
    return this.malformed ? 0 : b.readUIntBE(0, size);
  }
  rest(): Buffer {
    return this.take(Math.max(0, this.bytes.length - this.at));
  }
}

/**
 * The envelope's text from a stored attribute. Never throws: bytes that are
 * not one of the layouts (a damaged item) give `unreadable.<base64url>`, which
 * the envelope refuses to decrypt like any damaged ciphertext, so the
 * connection still lists and reports the failure as it would for damaged text.
 */
export function unpackTokens(bytes: Uint8Array): string {
  const all = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new Reader(all);
  const form = r.uint(1);
  let text: string | undefined;
  if (form === TEXT) text = r.rest().toString('utf8');
  else if (form === V2 || form === V1) {
    const ref = r.take(r.uint(1)).toString('utf8');
    const slot = form === V2 ? slotLabel(r.uint(4)) : undefined;
    const key = r.take(r.uint(2)).toString('base64url');
    const salt = form === V2 ? r.take(r.uint(1)).toString('base64url') : undefined;
    const sealed = r.rest().toString('base64url');
    text = form === V2 ? ['v2', ref, slot, key, salt, sealed].join('.') : ['v1', ref, key, sealed].join('.');
  }
  return text === undefined || r.malformed ? `unreadable.${all.toString('base64url')}` : text;
}
