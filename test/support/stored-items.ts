/**
 * Stored items as one text to search for secrets. `JSON.stringify` writes a
 * Uint8Array as a map of numbers, which no text search sees through, so a
 * Binary value is written out as its bytes (latin1: one character a byte, so
 * plaintext held in one shows as itself) and, for `tokens`, as the envelope
 * text the store reads from it too.
 */
import { unpackTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';

export function storedItemsText(items: unknown): string {
  return JSON.stringify(items, function (this: Record<string, unknown>, key: string, value: unknown) {
    // The holder's own value: JSON.stringify has already turned a Buffer into `{ type, data }` in `value`.
    const original = this[key];
    if (!(original instanceof Uint8Array)) return value;
    const bytes = Buffer.from(original.buffer, original.byteOffset, original.byteLength);
    return {
      bytes: bytes.toString('latin1'),
      ...(key === 'tokens' ? { unpacked: unpackTokens(original) } : {}),
    };
  });
}
