/**
 * What each function really asks of AWS, checked against what its manifest
 * entry grants (manifest/access.ts, the source of its IAM role).
 *
 * SDK middleware on every client the local broker's functions use records each
 * command sent inside a handler invocation (`runningFunction`) with the IAM
 * action it needs; calls to a port a function is not granted (the wiring's
 * stand-ins) are recorded too. Commands outside every invocation (test setup
 * writing items, the demo page's Scan, table creation) belong to no function
 * and are ignored.
 */
import { type FunctionAccess, functionAccess } from '../../manifest/access.ts';
import type { FunctionName } from '../../manifest/functions.ts';
import type {
  AwsClient,
  GrantTable,
  UngrantedCall,
  WiringObserver,
} from '../../functions/adapters/lambda/wiring.ts';
import { runningFunction } from '../../local/server.ts';

/** The one key, secret and bus of a deployment; the table is named, its indexes too. */
const TOKEN_KEY = 'token key';
const CLIENT_SECRETS = 'client secrets';
const EVENT_BUS = 'event bus';
const REFRESH_QUEUES = 'refresh queues';
const table = (name: string, index?: string) => (index ? `table/${name}/index/${index}` : `table/${name}`);

/** An IAM action on a resource, e.g. `dynamodb:Query` on `table/t/index/byOwner`. */
export interface Permission {
  readonly action: string;
  readonly resource: string;
}

/** One kind of call a function made, and how often. */
export interface SentCommand extends Permission {
  readonly function: FunctionName;
  /** The SDK command (`QueryCommand`), or the port call a stand-in refused (`tokenKey.generateDataKey`). */
  readonly command: string;
  count: number;
}

/** How many of each kind of call were recorded at some moment (`mark()`). */
export type Mark = ReadonlyMap<string, number>;

export interface Violation {
  readonly sent: SentCommand;
  readonly missing: Permission;
}

const SERVICES: Record<string, { prefix: string; resource: (input: Record<string, unknown>) => string }> = {
  DynamoDBClient: {
    prefix: 'dynamodb',
    resource: (input) =>
      table(
        typeof input.TableName === 'string' ? input.TableName : '*',
        typeof input.IndexName === 'string' ? input.IndexName : undefined,
      ),
  },
  KMSClient: { prefix: 'kms', resource: () => TOKEN_KEY },
  SecretsManagerClient: { prefix: 'secretsmanager', resource: () => CLIENT_SECRETS },
  EventBridgeClient: { prefix: 'events', resource: () => EVENT_BUS },
};

/** The IAM action an SDK command needs: `GetItemCommand` -> `dynamodb:GetItem`, a Query on an index -> on that index. */
export function permissionFor(clientName: string, commandName: string, input: unknown): Permission {
  const service = SERVICES[clientName];
  const operation = commandName.replace(/Command$/, '');
  if (!service) return { action: `${clientName}:${operation}`, resource: '*' };
  return {
    action: `${service.prefix}:${operation}`,
    resource: service.resource((input ?? {}) as Record<string, unknown>),
  };
}

const PORT_RESOURCE: Record<UngrantedCall['port'], string> = {
  tokenKey: TOKEN_KEY,
  clientSecrets: CLIENT_SECRETS,
  events: EVENT_BUS,
  // No AWS resource: a function not granted the CRM API calling it is still a call outside its grants.
  crmApi: 'the CRM API',
  refreshQueues: REFRESH_QUEUES,
};

/** What a manifest entry grants, as infra/broker-function.ts's bind helpers turn it into the role's statements. */
export function grantedPermissions(access: FunctionAccess, tableName: string): Permission[] {
  return [
    ...access.table.map((action) => ({ action, resource: table(tableName) })),
    ...(access.queries ?? []).map((index) => ({
      action: 'dynamodb:Query',
      resource: table(tableName, index),
    })),
    ...(access.tokenKey ?? []).map((action) => ({ action, resource: TOKEN_KEY })),
    ...(access.clientSecrets ? [{ action: 'secretsmanager:GetSecretValue', resource: CLIENT_SECRETS }] : []),
    ...(access.events ? [{ action: 'events:PutEvents', resource: EVENT_BUS }] : []),
    ...(access.refreshQueues === 'send' ? [{ action: 'sqs:SendMessage', resource: REFRESH_QUEUES }] : []),
  ];
}

const keyOf = (p: Permission) => `${p.action} on ${p.resource}`;

let recorders = 0;

export class CommandRecorder implements WiringObserver {
  private readonly seen = new Map<string, SentCommand>();
  private readonly clients = new Set<AwsClient>();
  private readonly middlewareName = `recordCommands${++recorders}`;

  /** Records the commands `client` sends inside a function's invocation. */
  readonly awsClient = (client: AwsClient): void => {
    if (this.clients.has(client)) return;
    this.clients.add(client);
    // Typed loosely: each client's stack is typed with its own service's inputs and outputs.
    (client.middlewareStack as any).add(
      (next: (args: any) => Promise<unknown>, context: { clientName?: string; commandName?: string }) =>
        async (args: { input: unknown }) => {
          const fn = runningFunction();
          if (fn) {
            const command = context.commandName ?? 'UnknownCommand';
            this.record(
              fn,
              command,
              permissionFor(context.clientName ?? 'UnknownClient', command, args.input),
            );
          }
          return next(args);
        },
      // Before any other initialize middleware (fault injection), once per send(), not per SDK retry.
      { step: 'initialize', priority: 'high', name: this.middlewareName },
    );
  };

  /** Records a call a stand-in refused: the port is not granted to the function. */
  readonly ungranted = (call: UngrantedCall): void => {
    this.record(call.function, `${call.port}.${call.call}`, {
      action: call.action,
      resource: PORT_RESOURCE[call.port],
    });
  };

  private record(fn: FunctionName, command: string, permission: Permission): void {
    const key = `${fn} ${command} ${keyOf(permission)}`;
    const entry = this.seen.get(key);
    if (entry) entry.count++;
    else this.seen.set(key, { function: fn, command, ...permission, count: 1 });
  }

  /** Every kind of call recorded, with counts since the start or since `mark` (kinds not seen since left out). */
  sent(since?: Mark): SentCommand[] {
    return [...this.seen.entries()].flatMap(([key, s]) => {
      const count = s.count - (since?.get(key) ?? 0);
      return count > 0 ? [{ ...s, count }] : [];
    });
  }

  /** The record as it stands, to ask later what was sent since (`sent(mark)`, `pairs(mark)`). */
  mark(): Mark {
    return new Map([...this.seen].map(([key, s]) => [key, s.count]));
  }

  /** `function action on resource`, sorted and unique: what a test compares. */
  pairs(since?: Mark): string[] {
    return [...new Set(this.sent(since).map((s) => `${s.function} ${keyOf(s)}`))].sort();
  }

  /** Each recorded call whose permission the function's entry in `grants` does not hold. */
  violations(grants: GrantTable = functionAccess, tableName = 'crm-oauth-broker'): Violation[] {
    const granted = new Map<FunctionName, Set<string>>();
    const holds = (fn: FunctionName, p: Permission) => {
      let set = granted.get(fn);
      if (!set) granted.set(fn, (set = new Set(grantedPermissions(grants[fn], tableName).map(keyOf))));
      return set.has(keyOf(p));
    };
    return this.sent()
      .filter((s) => !holds(s.function, s))
      .map((sent) => ({ sent, missing: { action: sent.action, resource: sent.resource } }));
  }

  /** Throws, listing function, command and missing grant, if any recorded call is not granted. */
  assertWithinGrants(grants: GrantTable = functionAccess, tableName = 'crm-oauth-broker'): void {
    const violations = this.violations(grants, tableName);
    if (violations.length > 0) throw new CommandsNotGranted(violations);
  }

  /** Stops recording: takes the middleware off every client (a test may reuse one it handed in). */
  detach(): void {
    for (const client of this.clients) client.middlewareStack.remove(this.middlewareName);
    this.clients.clear();
  }
}

export class CommandsNotGranted extends Error {
  constructor(readonly violations: Violation[]) {
    super(
      [
        'functions sent AWS commands that manifest/access.ts does not grant them:',
        ...violations.map(
          ({ sent, missing }) =>
            `  ${sent.function}: ${sent.command} (x${sent.count}) needs ${keyOf(missing)}, ` +
            `not granted by functionAccess['${sent.function}']`,
        ),
      ].join('\n'),
    );
    this.name = 'CommandsNotGranted';
  }
}
