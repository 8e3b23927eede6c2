/**
 * A function's ports as far as its manifest entry (`functionAccess[name]`,
 * manifest/access.ts) grants them. A port the function is not granted is a
 * stand-in that throws `PortNotGranted`, naming the function and the port, when
 * called: a missing grant fails loudly in a test instead of as an AccessDenied
 * in AWS, and a handler's deps show what it may use.
 */
import type { KeyAction } from '../../../manifest/access.ts';
import type { FunctionName } from '../../../manifest/functions.ts';
import type { ClientSecrets } from '../crm/oauth-client.ts';
import type { EventPublisher } from '../eventbridge/events.ts';
import type { KeyProvider } from '../kms/envelope.ts';
import type { CrmApi, RefreshQueue } from '../../core/ports.ts';

/** The ports a manifest entry grants or not (the table is every function's). */
export type GrantedPort = 'tokenKey' | 'clientSecrets' | 'events' | 'refreshQueues' | 'crmApi';

/** A call to a port the function is not granted. */
export interface UngrantedCall {
  readonly function: FunctionName;
  readonly port: GrantedPort;
  /** The port's method, e.g. `generateDataKey`. */
  readonly call: string;
  /** The IAM action the call makes in AWS, e.g. `kms:GenerateDataKey`. */
  readonly action: string;
}

/** Hears of every call to a port a function is not granted, just before the call throws. */
export type UngrantedCallListener = (call: UngrantedCall) => void;

export class PortNotGranted extends Error {
  readonly code = 'port_not_granted';
  constructor(readonly call: UngrantedCall) {
    super(
      `${call.function} called ${call.port}.${call.call} (${call.action}), which ` +
        `functionAccess['${call.function}'].${call.port} in manifest/access.ts does not grant it`,
    );
    this.name = 'PortNotGranted';
  }
}

const refuse =
  (call: UngrantedCall, listener: UngrantedCallListener | undefined) =>
  async (..._args: unknown[]): Promise<never> => {
    listener?.(call);
    throw new PortNotGranted(call);
  };

/**
 * The token key as far as `granted` allows: the real provider (built only if
 * some action is granted) for granted actions, refusals for the others.
 * `ref` is what the provider would store with each ciphertext: the envelope
 * checks it before it asks for a key, so a refusal must carry the same one.
 */
export function grantedKeyProvider(
  fn: FunctionName,
  granted: readonly KeyAction[],
  ref: string,
  provide: () => KeyProvider,
  listener?: UngrantedCallListener,
): KeyProvider {
  const may = (action: KeyAction) => granted.includes(action);
  const denied = (call: string, action: KeyAction) =>
    refuse({ function: fn, port: 'tokenKey', call, action }, listener);
  if (may('kms:GenerateDataKey') && may('kms:Decrypt')) return provide();
  const keys = granted.length > 0 ? provide() : undefined;
  return {
    ref: keys?.ref ?? ref,
    generateDataKey:
      keys && may('kms:GenerateDataKey')
        ? (context) => keys.generateDataKey(context)
        : denied('generateDataKey', 'kms:GenerateDataKey'),
    decryptDataKey:
      keys && may('kms:Decrypt')
        ? (encrypted, context) => keys.decryptDataKey(encrypted, context)
        : denied('decryptDataKey', 'kms:Decrypt'),
  };
}

/** Client ids (the authorize URL needs them, from configuration) without the secrets. */
export const ungrantedClientSecrets = (
  fn: FunctionName,
  ids: Pick<ClientSecrets, 'clientId'>,
  listener?: UngrantedCallListener,
): ClientSecrets => ({
  clientId: (provider) => ids.clientId(provider),
  clientSecret: refuse(
    { function: fn, port: 'clientSecrets', call: 'clientSecret', action: 'secretsmanager:GetSecretValue' },
    listener,
  ),
  forget: () => undefined,
});

export const ungrantedEvents = (fn: FunctionName, listener?: UngrantedCallListener): EventPublisher => ({
  publish: refuse({ function: fn, port: 'events', call: 'publish', action: 'events:PutEvents' }, listener),
});

/** The refresh queues for a function not granted `refreshQueues: 'send'` (only the dispatcher is). */
export const ungrantedRefreshQueue = (fn: FunctionName, listener?: UngrantedCallListener): RefreshQueue => ({
  send: refuse({ function: fn, port: 'refreshQueues', call: 'send', action: 'sqs:SendMessage' }, listener),
});

/** The CRM API for a function not granted `crmApi` (only `crm-request` calls a CRM's API for a caller). */
export const ungrantedCrmApi = (fn: FunctionName, listener?: UngrantedCallListener): CrmApi => ({
  send: refuse({ function: fn, port: 'crmApi', call: 'send', action: 'crm:ApiRequest' }, listener),
});
