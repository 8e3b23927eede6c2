/**
 * The sandbox CRMs' authorization server state: authorization codes, grants
 * and the tokens issued for them. Codes and tokens are kept only as SHA-256
 * hashes, so neither memory dumps nor the optional data file hold a usable
 * secret. With `dataFile`, grants survive a restart of the local server.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type SandboxProvider, isSandboxProvider } from './crms.ts';

export interface CodeRecord {
  provider: SandboxProvider;
  clientId: string;
  redirectUri: string;
  scope: string[];
  codeChallenge?: string;
  organizationId?: string;
  expiresAt: number;
  /** Set on the first exchange attempt: a code is single-use. */
  usedAt?: number;
  /** The grant this code produced, revoked if the code is presented again. */
  grantId?: string;
}

export interface GrantRecord {
  id: string;
  provider: SandboxProvider;
  clientId: string;
  scope: string[];
  organizationId?: string;
  createdAt: number;
  /** Hashes of refresh tokens this grant has rotated away, newest last (kept to detect reuse). */
  rotated: string[];
}

export interface TokenRecord {
  grantId: string;
  kind: 'access' | 'refresh';
  /** ms since epoch; null: never expires. */
  expiresAt: number | null;
}

interface Snapshot {
  version: 1;
  codes: Record<string, CodeRecord>;
  grants: Record<string, GrantRecord>;
  tokens: Record<string, TokenRecord>;
}

/** Keep used codes this long past expiry, so a replay still revokes what the code issued. */
const USED_CODE_RETENTION_MS = 10 * 60_000;
/** Rotated refresh tokens remembered per grant (to detect reuse) before the oldest is forgotten. */
const MAX_ROTATED_PER_GRANT = 100;

export const newSecret = (): string => randomBytes(32).toString('base64url');
export const hashSecret = (value: string): string => createHash('sha256').update(value).digest('base64url');

const empty = (): Snapshot => ({ version: 1, codes: {}, grants: {}, tokens: {} });

function load(file: string): Snapshot {
  if (!existsSync(file)) return empty();
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as Partial<Snapshot>;
    if (data.version !== 1 || typeof data.grants !== 'object' || typeof data.tokens !== 'object') {
      throw new Error('unrecognised format');
    }
    const snapshot: Snapshot = {
      version: 1,
      codes: data.codes ?? {},
      grants: data.grants ?? {},
      tokens: data.tokens ?? {},
    };
    for (const [id, grant] of Object.entries(snapshot.grants)) {
      if (!isSandboxProvider(grant.provider)) delete snapshot.grants[id];
    }
    return snapshot;
  } catch (err) {
    console.warn(`sandbox: ignoring unreadable data file ${file} (${(err as Error).message})`);
    return empty();
  }
}

export class SandboxStore {
  private state: Snapshot;

  constructor(
    private readonly now: () => number,
    private readonly dataFile?: string,
  ) {
    this.state = dataFile ? load(dataFile) : empty();
  }

  private save(): void {
    if (!this.dataFile) return;
    mkdirSync(dirname(this.dataFile), { recursive: true });
    const tmp = `${this.dataFile}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state), { mode: 0o600 });
    renameSync(tmp, this.dataFile);
  }

  /** Forgets expired codes and access tokens. */
  prune(): void {
    const now = this.now();
    let changed = false;
    for (const [hash, code] of Object.entries(this.state.codes)) {
      if (code.expiresAt + USED_CODE_RETENTION_MS < now || (!code.usedAt && code.expiresAt < now)) {
        delete this.state.codes[hash];
        changed = true;
      }
    }
    for (const [hash, token] of Object.entries(this.state.tokens)) {
      if ((token.expiresAt !== null && token.expiresAt <= now) || !this.state.grants[token.grantId]) {
        delete this.state.tokens[hash];
        changed = true;
      }
    }
    if (changed) this.save();
  }

  /** Issues a single-use authorization code; returns its value (only the hash is kept). */
  issueCode(record: CodeRecord): string {
    const code = newSecret();
    this.state.codes[hashSecret(code)] = record;
    this.save();
    return code;
  }

  /**
   * Marks a code used and returns its record as it was before this attempt
   * (`usedAt` set there means this is a replay). Undefined for an unknown code.
   */
  useCode(code: string): CodeRecord | undefined {
    const record = this.state.codes[hashSecret(code)];
    if (!record) return undefined;
    const before = { ...record };
    record.usedAt ??= this.now();
    this.save();
    return before;
  }

  /** Creates a grant for an exchanged code, with its first tokens. */
  createGrant(
    code: string,
    grant: Omit<GrantRecord, 'id' | 'createdAt' | 'rotated'>,
    tokens: { accessExpiresAt: number | null; refresh: boolean },
  ): { grant: GrantRecord; accessToken: string; refreshToken?: string } {
    const record: GrantRecord = { ...grant, id: newSecret(), createdAt: this.now(), rotated: [] };
    this.state.grants[record.id] = record;
    const codeRecord = this.state.codes[hashSecret(code)];
    if (codeRecord) codeRecord.grantId = record.id;
    const accessToken = this.addToken(record.id, 'access', tokens.accessExpiresAt);
    const refreshToken = tokens.refresh ? this.addToken(record.id, 'refresh', null) : undefined;
    this.save();
    return { grant: record, accessToken, ...(refreshToken ? { refreshToken } : {}) };
  }

  private addToken(grantId: string, kind: TokenRecord['kind'], expiresAt: number | null): string {
    const token = newSecret();
    this.state.tokens[hashSecret(token)] = { grantId, kind, expiresAt };
    return token;
  }

  /** A live (unexpired, unrevoked) token of the given kind and its grant. */
  findToken(
    token: string,
    kind: TokenRecord['kind'],
  ): { token: TokenRecord; grant: GrantRecord } | undefined {
    const record = this.state.tokens[hashSecret(token)];
    if (!record || record.kind !== kind) return undefined;
    if (record.expiresAt !== null && record.expiresAt <= this.now()) return undefined;
    const grant = this.state.grants[record.grantId];
    return grant ? { token: record, grant } : undefined;
  }

  /** The grant whose refresh token `token` once was, if it has been rotated away. */
  rotatedGrant(token: string): GrantRecord | undefined {
    const hash = hashSecret(token);
    return Object.values(this.state.grants).find((g) => g.rotated.includes(hash));
  }

  /** A new access token for a grant; with `rotate`, also a new refresh token replacing `oldRefresh`. */
  refresh(
    grant: GrantRecord,
    oldRefresh: string,
    opts: { accessExpiresAt: number | null; rotate: boolean },
  ): { accessToken: string; refreshToken?: string } {
    const accessToken = this.addToken(grant.id, 'access', opts.accessExpiresAt);
    let refreshToken: string | undefined;
    if (opts.rotate) {
      const oldHash = hashSecret(oldRefresh);
      delete this.state.tokens[oldHash];
      grant.rotated.push(oldHash);
      grant.rotated.splice(0, Math.max(0, grant.rotated.length - MAX_ROTATED_PER_GRANT));
      refreshToken = this.addToken(grant.id, 'refresh', null);
    }
    this.save();
    return { accessToken, ...(refreshToken ? { refreshToken } : {}) };
  }

  /** Revokes one access token. */
  revokeToken(token: string): void {
    delete this.state.tokens[hashSecret(token)];
    this.save();
  }

  /** Revokes a grant and every token issued for it. */
  revokeGrant(grantId: string): void {
    delete this.state.grants[grantId];
    for (const [hash, token] of Object.entries(this.state.tokens)) {
      if (token.grantId === grantId) delete this.state.tokens[hash];
    }
    this.save();
  }

  /** Revokes every grant of a provider, and its outstanding codes (the user removed the app). */
  revokeProvider(provider: SandboxProvider): number {
    const grants = Object.values(this.state.grants).filter((g) => g.provider === provider);
    for (const grant of grants) {
      delete this.state.grants[grant.id];
    }
    const revoked = new Set(grants.map((g) => g.id));
    for (const [hash, token] of Object.entries(this.state.tokens)) {
      if (revoked.has(token.grantId)) delete this.state.tokens[hash];
    }
    for (const [hash, code] of Object.entries(this.state.codes)) {
      if (code.provider === provider) delete this.state.codes[hash];
    }
    this.save();
    return grants.length;
  }

  /** Counts, for the sandbox's index page. */
  stats(provider: SandboxProvider): { grants: number } {
    return { grants: Object.values(this.state.grants).filter((g) => g.provider === provider).length };
  }

  flush(): void {
    this.save();
  }
}
