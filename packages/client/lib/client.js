// @ts-check
/**
 * The broker client: `getToken` with an in-memory cache and one `token-fetch` in flight per owner
 * and connection, `fetch` straight to the CRM with one refresh and retry on a 401, and `request`
 * through `crm-request`.
 */
import { createHash } from 'node:crypto';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { crmUrl } from './crm-path.js';
import { BrokerError, InvalidRequest, errorFor } from './errors.js';

/**
 * @typedef {import('../index.js').BrokerClient} BrokerClient
 * @typedef {import('../index.js').BrokerClientOptions} BrokerClientOptions
 * @typedef {import('../index.js').BrokerToken} BrokerToken
 * @typedef {import('../index.js').CrmAnswer} CrmAnswer
 *
 * @typedef {object} CacheEntry
 * @property {BrokerToken} token
 * @property {number | null} expiresAtMs
 * @property {number} receivedAtMs
 * @property {number} minValiditySeconds what the token was fetched for
 *
 * @typedef {object} Flight one token-fetch in progress for an owner and connection
 * @property {Promise<CacheEntry>} promise
 * @property {number} minValiditySeconds
 * @property {string | undefined} rejectedTokenSha256
 */

const DEFAULT_PREFIX = 'crm-oauth-broker';
const DEFAULT_MIN_VALIDITY_SECONDS = 300;
const MAX_MIN_VALIDITY_SECONDS = 86_400;
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

const sha256Hex = (/** @type {string} */ value) => createHash('sha256').update(value, 'utf8').digest('hex');

/** @param {string} endpoint */
function isLoopback(endpoint) {
  try {
    return LOOPBACK_HOSTS.has(new URL(endpoint).hostname);
  } catch {
    throw new InvalidRequest('endpoint must be a URL');
  }
}

/**
 * @param {BrokerClientOptions} options
 * @returns {LambdaClient}
 */
function lambdaFor(options) {
  const local = options.endpoint !== undefined && isLoopback(options.endpoint);
  return new LambdaClient({
    ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
    ...(options.region !== undefined ? { region: options.region } : local ? { region: 'us-east-1' } : {}),
    // The local server checks no signature; AWS credentials are neither needed nor sent anywhere.
    ...(local ? { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } } : {}),
  });
}

/** @param {unknown} value @param {string} name */
function requireName(value, name) {
  if (typeof value !== 'string' || value === '')
    throw new InvalidRequest(`${name} must be a non-empty string`);
  return value;
}

/** @param {unknown} value */
function minValidityOf(value) {
  if (value === undefined) return DEFAULT_MIN_VALIDITY_SECONDS;
  if (
    typeof value !== 'number' ||
    !Number.isInteger(value) ||
    value < 0 ||
    value > MAX_MIN_VALIDITY_SECONDS
  ) {
    throw new InvalidRequest(`minValiditySeconds must be an integer from 0 to ${MAX_MIN_VALIDITY_SECONDS}`);
  }
  return value;
}

/** @param {unknown} value */
function ownerIdOf(value) {
  if (value === undefined) return undefined;
  return requireName(value, 'ownerId');
}

/**
 * @param {unknown} value
 * @returns {value is Record<string, unknown>}
 */
const isRecord = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * `token-fetch`'s answer, checked field by field.
 * @param {unknown} value
 * @returns {BrokerToken}
 */
function tokenOf(value) {
  if (
    !isRecord(value) ||
    typeof value.connectionId !== 'string' ||
    typeof value.provider !== 'string' ||
    typeof value.accessToken !== 'string' ||
    typeof value.apiBaseUrl !== 'string' ||
    !(
      value.expiresAt === null ||
      (typeof value.expiresAt === 'string' && !Number.isNaN(Date.parse(value.expiresAt)))
    ) ||
    !isRecord(value.headers) ||
    !Object.values(value.headers).every((v) => typeof v === 'string')
  ) {
    throw new BrokerError('InvalidResponse', 'token-fetch answered with an unexpected shape');
  }
  return /** @type {BrokerToken} */ (
    Object.freeze({
      ...value,
      headers: Object.freeze({ .../** @type {Record<string, string>} */ (value.headers) }),
    })
  );
}

/**
 * `crm-request`'s answer, checked.
 * @param {unknown} value
 * @returns {CrmAnswer}
 */
function answerOf(value) {
  if (
    !isRecord(value) ||
    typeof value.status !== 'number' ||
    !isRecord(value.headers) ||
    !(
      value.retryAfterSeconds === null ||
      value.retryAfterSeconds === undefined ||
      typeof value.retryAfterSeconds === 'number'
    )
  ) {
    throw new BrokerError('InvalidResponse', 'crm-request answered with an unexpected shape');
  }
  const body = value.body ?? null;
  const encodings = ['json', 'text', 'base64', 'none'];
  return {
    status: value.status,
    headers: /** @type {Record<string, string>} */ (value.headers),
    body,
    bodyEncoding: /** @type {CrmAnswer['bodyEncoding']} */ (
      encodings.includes(/** @type {string} */ (value.bodyEncoding))
        ? value.bodyEncoding
        : body === null
          ? 'none'
          : typeof body === 'string'
            ? 'text'
            : 'json'
    ),
    bodyTooLarge: value.bodyTooLarge === true,
    retryAfterSeconds: /** @type {number | null | undefined} */ (value.retryAfterSeconds) ?? null,
  };
}

/**
 * A body `fetch` can send twice (for the retry after a 401); a stream can be read only once.
 * @param {unknown} body
 */
const isReplayable = (body) =>
  body === undefined ||
  body === null ||
  typeof body === 'string' ||
  body instanceof URLSearchParams ||
  body instanceof ArrayBuffer ||
  ArrayBuffer.isView(body) ||
  body instanceof Blob ||
  body instanceof FormData;

/** @type {typeof import('../index.js').createBrokerClient} */
export const createBrokerClient = (options = {}) => {
  const ownLambda = options.lambda === undefined;
  const lambda = options.lambda ?? lambdaFor(options);
  const prefix = options.functionPrefix ?? DEFAULT_PREFIX;
  const names = {
    tokenFetch: options.functionNames?.tokenFetch ?? `${prefix}-token-fetch`,
    crmRequest: options.functionNames?.crmRequest ?? `${prefix}-crm-request`,
  };
  const now = options.now ?? Date.now;
  const fetchCrm = options.fetch ?? globalThis.fetch;

  /** @type {Map<string, CacheEntry>} */
  const cache = new Map();
  /** @type {Map<string, Flight>} */
  const flights = new Map();
  /** Bumped by `clearCache`, so a fetch that was in flight then does not refill the cache. */
  let generation = 0;

  // JSON of both parts, so no owner id can be crafted to collide with another owner's key.
  const keyOf = (/** @type {string | undefined} */ ownerId, /** @type {string} */ connectionId) =>
    JSON.stringify([ownerId ?? null, connectionId]);

  /**
   * Until `expiresAt − minValiditySeconds`. A token that already had less than that left when the
   * broker handed it out (the broker never asks more than half a token's issued lifetime) is kept,
   * for requests asking no more than it was fetched for, until half of what it had left has passed,
   * so short-lived tokens do not turn every call into an invocation.
   * @param {CacheEntry} entry
   * @param {number} minValiditySeconds
   */
  function isFresh(entry, minValiditySeconds) {
    if (entry.expiresAtMs === null) return true;
    const at = now();
    if (at < entry.expiresAtMs - minValiditySeconds * 1000) return true;
    const hadLeftMs = entry.expiresAtMs - entry.receivedAtMs;
    return (
      hadLeftMs < entry.minValiditySeconds * 1000 &&
      minValiditySeconds <= entry.minValiditySeconds &&
      at < entry.receivedAtMs + hadLeftMs / 2
    );
  }

  /**
   * Invokes a function; its function error becomes the contract's error class.
   * @param {string} functionName
   * @param {Record<string, unknown>} payload
   * @returns {Promise<unknown>}
   */
  async function invoke(functionName, payload) {
    let out;
    try {
      out = await lambda.send(
        new InvokeCommand({
          FunctionName: functionName,
          Payload: new TextEncoder().encode(JSON.stringify(payload)),
        }),
      );
    } catch (err) {
      const name = err instanceof Error ? err.name : 'Error';
      throw new BrokerError(name, `Lambda Invoke of ${functionName} failed (${name})`, { cause: err });
    }
    const text = out.Payload ? new TextDecoder().decode(out.Payload) : '';
    /** @type {unknown} */
    let body = null;
    try {
      body = text === '' ? null : JSON.parse(text);
    } catch {
      if (!out.FunctionError)
        throw new BrokerError('InvalidResponse', `${functionName} answered with no JSON`);
    }
    if (out.FunctionError) {
      const errorType =
        isRecord(body) && typeof body.errorType === 'string' ? body.errorType : out.FunctionError;
      const message = isRecord(body) && typeof body.errorMessage === 'string' ? body.errorMessage : errorType;
      throw errorFor(errorType, message);
    }
    return body;
  }

  /**
   * Starts the one token-fetch for `key`; the cache takes its answer.
   * @param {string} key
   * @param {{ connectionId: string, ownerId: string | undefined, minValiditySeconds: number, rejectedTokenSha256?: string }} request
   * @returns {Flight}
   */
  function startFlight(key, request) {
    const startedIn = generation;
    const promise = invoke(names.tokenFetch, {
      connectionId: request.connectionId,
      ...(request.ownerId !== undefined ? { ownerId: request.ownerId } : {}),
      minValiditySeconds: request.minValiditySeconds,
      ...(request.rejectedTokenSha256 !== undefined
        ? { rejectedTokenSha256: request.rejectedTokenSha256 }
        : {}),
    })
      .then((answer) => {
        const token = tokenOf(answer);
        /** @type {CacheEntry} */
        const entry = {
          token,
          expiresAtMs: token.expiresAt === null ? null : Date.parse(token.expiresAt),
          receivedAtMs: now(),
          minValiditySeconds: request.minValiditySeconds,
        };
        if (generation === startedIn) cache.set(key, entry);
        return entry;
      })
      .catch((/** @type {unknown} */ err) => {
        // The connection is gone or dead: a cached token of it must not outlive that answer.
        if (
          err instanceof BrokerError &&
          (err.errorType === 'NeedsReauth' || err.errorType === 'ConnectionNotFound')
        ) {
          cache.delete(key);
        }
        throw err;
      })
      .finally(() => {
        if (flights.get(key) === flight) flights.delete(key);
      });
    /** @type {Flight} */
    const flight = {
      promise,
      minValiditySeconds: request.minValiditySeconds,
      rejectedTokenSha256: request.rejectedTokenSha256,
    };
    flights.set(key, flight);
    return flight;
  }

  /**
   * @param {string} connectionId
   * @param {string | undefined} ownerId
   * @param {number} minValiditySeconds
   * @returns {Promise<BrokerToken>}
   */
  async function tokenFor(connectionId, ownerId, minValiditySeconds) {
    const key = keyOf(ownerId, connectionId);
    const cached = cache.get(key);
    if (cached && isFresh(cached, minValiditySeconds)) return cached.token;
    const flight = flights.get(key);
    if (flight) {
      const entry = await flight.promise;
      if (isFresh(entry, minValiditySeconds)) return entry.token;
      // Fetched for less validity than this caller needs: fetch again (once more at most).
      const next = flights.get(key);
      if (next && next !== flight && next.minValiditySeconds >= minValiditySeconds) {
        return (await next.promise).token;
      }
    }
    return (await startFlight(key, { connectionId, ownerId, minValiditySeconds }).promise).token;
  }

  /**
   * The token to use after the CRM answered 401 to `rejected`: the cached one if another caller has
   * already replaced it, else the answer of the one `token-fetch` with `rejectedTokenSha256`
   * (shared by every caller that saw the same token rejected).
   * @param {string} connectionId
   * @param {string | undefined} ownerId
   * @param {number} minValiditySeconds
   * @param {BrokerToken} rejected
   * @returns {Promise<BrokerToken>}
   */
  async function replacementFor(connectionId, ownerId, minValiditySeconds, rejected) {
    const key = keyOf(ownerId, connectionId);
    const rejectedTokenSha256 = sha256Hex(rejected.accessToken);
    const cached = cache.get(key);
    if (cached) {
      if (cached.token.accessToken !== rejected.accessToken) {
        if (isFresh(cached, minValiditySeconds)) return cached.token;
      } else {
        cache.delete(key);
      }
    }
    const flight = flights.get(key);
    if (flight) {
      if (flight.rejectedTokenSha256 === rejectedTokenSha256) return (await flight.promise).token;
      const entry = await flight.promise;
      if (entry.token.accessToken !== rejected.accessToken && isFresh(entry, minValiditySeconds))
        return entry.token;
      const next = flights.get(key);
      if (next && next.rejectedTokenSha256 === rejectedTokenSha256) return (await next.promise).token;
    }
    return (
      await startFlight(key, { connectionId, ownerId, minValiditySeconds, rejectedTokenSha256 }).promise
    ).token;
  }

  return {
    getToken(connectionId, getOptions = {}) {
      return Promise.resolve().then(() =>
        tokenFor(
          requireName(connectionId, 'connectionId'),
          ownerIdOf(getOptions.ownerId),
          minValidityOf(getOptions.minValiditySeconds),
        ),
      );
    },

    async fetch(connectionId, path, init = {}) {
      const { ownerId: rawOwnerId, minValiditySeconds: rawMin, query, ...requestInit } = init;
      requireName(connectionId, 'connectionId');
      const ownerId = ownerIdOf(rawOwnerId);
      const minValiditySeconds = minValidityOf(rawMin);
      // Checked before any token exists: a bad path costs no invocation and sends nothing.
      crmUrl('https://crm.invalid/api', path, query);

      const send = (/** @type {BrokerToken} */ token) => {
        const headers = new Headers(requestInit.headers);
        for (const [name, value] of Object.entries(token.headers)) headers.set(name, value);
        return fetchCrm(crmUrl(token.apiBaseUrl, path, query), {
          ...requestInit,
          headers,
          // The token goes to the API base only, not wherever a redirect points.
          redirect: requestInit.redirect ?? 'manual',
        });
      };

      const token = await tokenFor(connectionId, ownerId, minValiditySeconds);
      const first = await send(token);
      if (first.status !== 401) return first;
      if (!isReplayable(requestInit.body)) {
        // The body was a stream and is spent: replace the token for the next call, answer this 401.
        await replacementFor(connectionId, ownerId, minValiditySeconds, token);
        return first;
      }
      await first.body?.cancel().catch(() => undefined);
      return send(await replacementFor(connectionId, ownerId, minValiditySeconds, token));
    },

    async request(connectionId, crmRequest) {
      requireName(connectionId, 'connectionId');
      if (!isRecord(crmRequest)) throw new InvalidRequest('request must be an object');
      const { ownerId, method, path, query, headers, body, idempotent } = crmRequest;
      const payload = {
        connectionId,
        ...(ownerId !== undefined ? { ownerId: ownerIdOf(ownerId) } : {}),
        method: method ?? 'GET',
        path,
        ...(query !== undefined ? { query } : {}),
        ...(headers !== undefined ? { headers } : {}),
        body: body ?? null,
        ...(idempotent !== undefined ? { idempotent } : {}),
      };
      return answerOf(await invoke(names.crmRequest, payload));
    },

    clearCache(connectionId) {
      generation += 1;
      if (connectionId === undefined) {
        cache.clear();
        return;
      }
      for (const key of cache.keys()) if (JSON.parse(key)[1] === connectionId) cache.delete(key);
    },

    destroy() {
      generation += 1;
      cache.clear();
      if (ownLambda) lambda.destroy();
    },
  };
};
