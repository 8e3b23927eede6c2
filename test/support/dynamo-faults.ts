/**
 * DynamoDB fault injection for integration tests: SDK middleware on a running
 * broker's `DynamoDBClient` that makes the next N matching commands fail with
 * the error a real service or client would raise.
 *
 * - `scope: 'call'` (default) fails the whole `send()`, as after the SDK has
 *   used up its own retries; `scope: 'attempt'` fails single attempts inside
 *   the SDK's retry loop, so the SDK's retry policy (3 attempts, throttling
 *   and timeouts retried) applies to them.
 * - `when: 'before'` (default): the request never reaches the store;
 *   `when: 'after'`: the store applied it and the answer was lost (a timeout
 *   after the write, the case DynamoDB's docs warn retries must survive).
 *
 * Every command sent is recorded in `sent` (name and input), so a test can
 * see what the broker did after a fault (e.g. a re-read).
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';

export type FaultName =
  | 'ConditionalCheckFailedException'
  | 'ProvisionedThroughputExceededException'
  | 'ThrottlingException'
  | 'TimeoutError';

export type CommandName =
  | 'GetItemCommand'
  | 'PutItemCommand'
  | 'UpdateItemCommand'
  | 'DeleteItemCommand'
  | 'QueryCommand'
  | 'ScanCommand';

/** The request a command carries (only the parts the matchers look at). */
export interface CommandInput {
  Key?: { pk?: { S?: string } };
  Item?: { pk?: { S?: string } };
  UpdateExpression?: string;
  ConditionExpression?: string;
  [field: string]: unknown;
}

export interface FaultRule {
  command: CommandName;
  /** Further narrows which commands fail (key, expression contents). */
  match?: (input: CommandInput) => boolean;
  error: FaultName;
  /** How many matching commands (or attempts, with `scope: 'attempt'`) fail; default 1. */
  times?: number;
  scope?: 'call' | 'attempt';
  when?: 'before' | 'after';
}

export interface ArmedFault {
  /** How many times this fault fired so far. */
  readonly fired: number;
  /** How many firings are still queued. */
  readonly remaining: number;
}

export interface DynamoFaults {
  arm(rule: FaultRule): ArmedFault;
  /** Every command sent (one entry per `send()`, not per SDK attempt). */
  readonly sent: { command: string; input: CommandInput }[];
  /** How many attempts the SDK makes per command (its `maxAttempts`). */
  maxAttempts(): Promise<number>;
  /** Drops armed faults and the record of sent commands. */
  clear(): void;
}

interface Armed extends FaultRule {
  fired: number;
  left: number;
}

/** The error a real DynamoDB service or SDK client raises for `name`. */
export function dynamoError(name: FaultName): Error {
  const status = name === 'TimeoutError' ? undefined : 400;
  return Object.assign(new Error(`injected ${name}`), {
    name,
    $fault: 'client',
    $metadata: status ? { httpStatusCode: status } : {},
  });
}

/** The partition key a command addresses (Key for Get/Update/Delete, Item for Put). */
export const pkOf = (input: CommandInput): string => input.Key?.pk?.S ?? input.Item?.pk?.S ?? '';

/** Matches commands on items whose partition key starts with `prefix` (`STATE#`, `CONN#`, `SESSION#`). */
export const onItems =
  (prefix: string, also?: (input: CommandInput) => boolean) =>
  (input: CommandInput): boolean =>
    pkOf(input).startsWith(prefix) && (also ? also(input) : true);

/** Matches commands whose update or condition expression contains `text`. */
export const expressionHas =
  (text: string) =>
  (input: CommandInput): boolean =>
    `${input.UpdateExpression ?? ''} ${input.ConditionExpression ?? ''}`.includes(text);

export function injectDynamoFaults(client: DynamoDBClient): DynamoFaults {
  const armed: Armed[] = [];
  const sent: { command: string; input: CommandInput }[] = [];

  /** The first armed rule with firings left that matches this command in this scope. */
  const take = (scope: 'call' | 'attempt', command: string, input: CommandInput): Armed | undefined => {
    const rule = armed.find(
      (r) =>
        r.left > 0 &&
        (r.scope ?? 'call') === scope &&
        r.command === command &&
        (r.match ? r.match(input) : true),
    );
    if (rule) {
      rule.left--;
      rule.fired++;
    }
    return rule;
  };

  const inject =
    (scope: 'call' | 'attempt') =>
    <T>(next: (args: T) => Promise<unknown>, context: { commandName?: string }) =>
    async (args: T) => {
      const command = context.commandName ?? '';
      const input = (args as { input: CommandInput }).input;
      if (scope === 'call') sent.push({ command, input });
      const rule = take(scope, command, input);
      if (!rule) return next(args);
      if ((rule.when ?? 'before') === 'after') await next(args);
      throw dynamoError(rule.error);
    };

  // Outside the SDK's retries: the first step of every send().
  client.middlewareStack.add(inject('call') as never, {
    step: 'initialize',
    name: 'testFaultsPerCall',
    priority: 'high',
  });
  // Inside the SDK's retries: after the retry middleware (finalizeRequest, high), once per attempt.
  client.middlewareStack.add(inject('attempt') as never, {
    step: 'finalizeRequest',
    name: 'testFaultsPerAttempt',
    priority: 'low',
  });

  return {
    arm(rule) {
      const entry: Armed = { ...rule, fired: 0, left: rule.times ?? 1 };
      armed.push(entry);
      return {
        get fired() {
          return entry.fired;
        },
        get remaining() {
          return entry.left;
        },
      };
    },
    sent,
    maxAttempts: () => client.config.maxAttempts(),
    clear() {
      armed.length = 0;
      sent.length = 0;
    },
  };
}
