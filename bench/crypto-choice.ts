/**
 * The measurement behind the envelope-encryption choice (README, "Encryption"):
 * bundle a minimal "encrypt with a KMS data key" module both ways with esbuild
 * (minified, node24, ESM, as the Lambda bundles are built) and time importing
 * each bundle in a fresh Node process.
 *
 *   npx tsx bench/crypto-choice.ts
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleAndTime } from './bundle.ts';

const out = join('bench', 'results', 'crypto-choice');
mkdirSync(out, { recursive: true });

const variants = {
  'node-crypto+client-kms': `
    import { KMSClient, GenerateDataKeyCommand } from '@aws-sdk/client-kms';
    import { createCipheriv, randomBytes } from 'node:crypto';
    export const kms = new KMSClient({ region: 'us-east-1' });
    export function seal(key, plaintext, aad) {
      const iv = randomBytes(12); const c = createCipheriv('aes-256-gcm', key, iv); c.setAAD(Buffer.from(aad));
      return Buffer.concat([iv, c.update(plaintext), c.final(), c.getAuthTag()]);
    }
    export const cmd = GenerateDataKeyCommand;`,
  'aws-encryption-sdk': `
    import { buildClient, CommitmentPolicy, KmsKeyringNode } from '@aws-crypto/client-node';
    export const client = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);
    export const keyring = new KmsKeyringNode({ generatorKeyId: 'arn:aws:kms:us-east-1:111122223333:key/x' });`,
};

const rows: Record<string, unknown>[] = [];
for (const [name, source] of Object.entries(variants)) {
  const entry = join(out, `${name}.src.mjs`);
  const bundle = join(out, `${name}.mjs`);
  writeFileSync(entry, source);
  const timing = await bundleAndTime(entry, bundle);
  rows.push({ variant: name, bundleKiB: timing.kib, importMsMedian: Number(timing.importMs.toFixed(1)) });
}
console.table(rows);
writeFileSync(join('bench', 'results', 'crypto-choice.json'), JSON.stringify(rows, null, 2));
