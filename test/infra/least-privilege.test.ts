/**
 * security.md row 14, proved on the synthesized template: one role per
 * function, each with exactly the calls its code makes (read off the handlers
 * and the lib code they call), on named resources only, and a key policy that
 * lets only the broker's roles use the token key, only with the token context.
 */
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { type FunctionName, functionNames } from '../../manifest/functions.ts';
import {
  type Assembly,
  REGION,
  type Statement,
  functionResource,
  loadAssembly,
  ofType,
  roleStatements,
  symbolize,
} from './support.ts';

let assembly: Assembly;
beforeAll(() => {
  assembly = loadAssembly(inject('assemblyDir'));
});

const allow = (s: Omit<Statement, 'Effect'>): Statement => ({
  Effect: 'Allow',
  ...s,
  Action: [...s.Action].sort(),
});
const ownLogs = (name: FunctionName) =>
  allow({
    Sid: 'WriteOwnLogs',
    Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
    Resource: `LogGroup[${name}].Arn`,
  });
const tableItems = (...actions: string[]) =>
  allow({ Sid: 'TableItems', Action: actions.map((a) => `dynamodb:${a}`), Resource: 'Table.Arn' });
const indexQuery = (index: string) =>
  allow({ Sid: 'TableIndexQueries', Action: ['dynamodb:Query'], Resource: `Table.Arn/index/${index}` });
/** The table is encrypted with the customer key: DynamoDB decrypts its table key as the caller. */
const tableAtRest = allow({
  Sid: 'TableEncryptionAtRest',
  Action: ['kms:Decrypt'],
  Resource: 'Key.Arn',
  Condition: { StringEquals: { 'kms:ViaService': `dynamodb.${REGION}.amazonaws.com` } },
});
const tokenEnvelopes = (...actions: string[]) =>
  allow({
    Sid: 'TokenEnvelopeKey',
    Action: actions.map((a) => `kms:${a}`),
    Resource: 'Key.Arn',
    Condition: {
      StringEquals: { 'kms:EncryptionContext:purpose': 'crm-oauth-broker/tokens' },
      'ForAllValues:StringEquals': {
        'kms:EncryptionContextKeys': ['connectionId', 'keySlot', 'ownerId', 'provider', 'purpose'],
      },
    },
  });
const clientSecrets = allow({
  Sid: 'ReadClientSecrets',
  Action: ['secretsmanager:GetSecretValue'],
  Resource: 'Secret.Ref',
});
const publishEvents = allow({
  Sid: 'PublishEvents',
  Action: ['events:PutEvents'],
  Resource: 'EventBus.Arn',
  Condition: { StringEquals: { 'events:source': 'crm-oauth-broker' } },
});

/** The three CRM refresh queues (infra/refresh-queues.ts), by their tags. */
const refreshQueues = ['capsule', 'close', 'copper'].map((p) => `Queue[refresh-${p}].Arn`);

/** What each function's code does, and so all its role may do. */
const expected: Record<FunctionName, Statement[]> = {
  // createConnectSession -> store.putSession. Nothing else: no key, no secret, no events.
  'connect-session': [ownLogs('connect-session'), tableItems('PutItem'), tableAtRest],
  // beginAuthorization -> consumeSession (conditional DeleteItem), putState (PutItem); the CRM URL needs only the client id.
  authorize: [ownLogs('authorize'), tableItems('DeleteItem', 'PutItem'), tableAtRest],
  // completeAuthorization -> consumeState (DeleteItem), exchangeCode (client secret), envelope.encrypt
  // (GenerateDataKey), the account's connection id (GetItem, conditional PutItem), getConnection (GetItem)
  // + conditional upsertConnection (UpdateItem), decrypt of the
  // replaced grant to revoke it (security.md row 20), connection.created/reconnected events.
  callback: [
    ownLogs('callback'),
    tableItems('DeleteItem', 'GetItem', 'PutItem', 'UpdateItem'),
    tableAtRest,
    tokenEnvelopes('Decrypt', 'GenerateDataKey'),
    clientSecrets,
    publishEvents,
  ],
  // fetchToken -> getConnection (GetItem), decrypt; when due, refreshConnection: lease + result writes
  // (UpdateItem), refresh grant (client secret), re-encrypt (GenerateDataKey), lifecycle events.
  'token-fetch': [
    ownLogs('token-fetch'),
    tableItems('GetItem', 'UpdateItem'),
    tableAtRest,
    tokenEnvelopes('Decrypt', 'GenerateDataKey'),
    clientSecrets,
    publishEvents,
  ],
  // list (Query byOwner), get (GetItem), delete: the refresh lease (UpdateItem) to wait out a refresh in
  // progress, decrypt for the CRM revoke, deleteConnection (DeleteItem), connection.deleted; confirm: take
  // the pending result (DeleteItem), bind the account's id (PutItem), store the grant (UpdateItem,
  // GenerateDataKey).
  connections: [
    ownLogs('connections'),
    tableItems('DeleteItem', 'GetItem', 'PutItem', 'UpdateItem'),
    indexQuery('byOwner'),
    tableAtRest,
    tokenEnvelopes('Decrypt', 'GenerateDataKey'),
    clientSecrets,
    publishEvents,
  ],
  // crmRequest -> as token-fetch (a refresh under the lease when the token is due or the CRM answered 401),
  // plus the account's rate budget item (GetItem, conditional UpdateItem); the CRM API needs no AWS permission.
  'crm-request': [
    ownLogs('crm-request'),
    tableItems('GetItem', 'UpdateItem'),
    tableAtRest,
    tokenEnvelopes('Decrypt', 'GenerateDataKey'),
    clientSecrets,
    publishEvents,
  ],
  // fetchToken with forceRefresh: as token-fetch.
  refresh: [
    ownLogs('refresh'),
    tableItems('GetItem', 'UpdateItem'),
    tableAtRest,
    tokenEnvelopes('Decrypt', 'GenerateDataKey'),
    clientSecrets,
    publishEvents,
  ],
  // The dispatcher: findDueConnections (Query byDueTime, never Scan), a claim per due connection and
  // expired pending result (conditional UpdateItem), SendMessageBatch to the CRM queues; failed
  // asynchronous runs go to the dead-letter queue. No token key, no secret, no events, no GetItem.
  'refresh-scheduled': [
    ownLogs('refresh-scheduled'),
    tableItems('UpdateItem'),
    indexQuery('byDueTime'),
    tableAtRest,
    allow({ Sid: 'AsyncFailuresToDeadLetterQueue', Action: ['sqs:SendMessage'], Resource: 'Queue.Arn' }),
    allow({ Sid: 'SendToRefreshQueues', Action: ['sqs:SendMessage'], Resource: refreshQueues }),
  ],
  // The workers: getConnection, refreshConnection as token-fetch (lease and result writes, refresh with
  // the client secret, re-encrypt, events), give a claim back (UpdateItem), take and revoke an unconfirmed
  // pending result (DeleteItem, Decrypt); the event source mapping's receive, delete and attributes.
  'refresh-worker': [
    ownLogs('refresh-worker'),
    tableItems('DeleteItem', 'GetItem', 'UpdateItem'),
    tableAtRest,
    tokenEnvelopes('Decrypt', 'GenerateDataKey'),
    clientSecrets,
    publishEvents,
    allow({
      Sid: 'ConsumeRefreshQueues',
      Action: ['sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage'],
      Resource: refreshQueues,
    }),
  ],
};

const bySid = (statements: Statement[]) =>
  [...statements].sort((a, b) => (a.Sid ?? '').localeCompare(b.Sid ?? ''));

describe('one role per function, with exactly what its code calls', () => {
  it('gives every function its own role', () => {
    const roleIds = functionNames.map((name) => {
      const [, fn] = functionResource(assembly.statelessJson, 'AWS::Lambda::Function', name);
      return symbolize(assembly, fn.Properties?.Role);
    });
    expect(new Set(roleIds).size).toBe(functionNames.length);
    for (const name of functionNames) expect(roleIds).toContain(`Role[${name}].Arn`);
  });

  it.each(functionNames)('%s: the role holds exactly its statements', (name) => {
    const [roleId] = functionResource(assembly.statelessJson, 'AWS::IAM::Role', name);
    expect(roleStatements(assembly, roleId)).toEqual(bySid(expected[name]));
  });

  it('token-fetch reads and decrypts, never scans, deletes or puts', () => {
    const [roleId] = functionResource(assembly.statelessJson, 'AWS::IAM::Role', 'token-fetch');
    const actions = roleStatements(assembly, roleId).flatMap((s) => s.Action);
    for (const forbidden of [
      'dynamodb:Scan',
      'dynamodb:Query',
      'dynamodb:PutItem',
      'dynamodb:DeleteItem',
      'kms:Encrypt',
    ]) {
      expect(actions).not.toContain(forbidden);
    }
    // Every key use it has is conditioned: on the token context, or on coming through DynamoDB.
    const keyUses = roleStatements(assembly, roleId).filter((s) => s.Resource === 'Key.Arn');
    expect(keyUses.length).toBe(2);
    for (const s of keyUses) expect(s.Condition).toBeDefined();
  });

  it('each role is assumable by Lambda only, has no managed policy, and sits under the broker role path', () => {
    for (const name of functionNames) {
      const [, role] = functionResource(assembly.statelessJson, 'AWS::IAM::Role', name);
      expect(role.Properties?.ManagedPolicyArns).toBeUndefined();
      expect(role.Properties?.Path).toBe('/crm-oauth-broker/');
      expect(role.Properties?.AssumeRolePolicyDocument).toEqual({
        Version: '2012-10-17',
        Statement: [
          { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
        ],
      });
    }
  });

  it('no statement in the stateless stack allows a wildcard action or Resource "*"', () => {
    const statements = ofType(assembly.statelessJson, 'AWS::IAM::Policy').flatMap(
      ([, p]) => (p.Properties?.PolicyDocument as { Statement: Statement[] }).Statement,
    );
    expect(statements.length).toBeGreaterThan(0);
    for (const s of statements) {
      const resourcesOf = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
      for (const r of resourcesOf) expect(JSON.stringify(r)).not.toMatch(/"\*"|:\*"?$/);
      for (const a of Array.isArray(s.Action) ? s.Action : [s.Action]) expect(a).not.toContain('*');
    }
  });

  it('the schedule role may only invoke refresh-scheduled and dead-letter to its queue', () => {
    const roles = ofType(assembly.statelessJson, 'AWS::IAM::Role').filter(([, r]) =>
      JSON.stringify(r.Properties?.AssumeRolePolicyDocument).includes('scheduler.amazonaws.com'),
    );
    expect(roles).toHaveLength(1);
    const [roleId, role] = roles[0] as [string, (typeof roles)[number][1]];
    expect(role.Properties?.AssumeRolePolicyDocument).toEqual({
      Version: '2012-10-17',
      Statement: [
        {
          Action: 'sts:AssumeRole',
          Effect: 'Allow',
          Principal: { Service: 'scheduler.amazonaws.com' },
          Condition: { StringEquals: { 'aws:SourceAccount': '111111111111' } },
        },
      ],
    });
    expect(roleStatements(assembly, roleId)).toEqual([
      allow({
        Sid: 'InvokeRefreshScheduled',
        Action: ['lambda:InvokeFunction'],
        Resource: 'Function[refresh-scheduled].Arn',
      }),
      allow({ Sid: 'UndeliveredRunsToDeadLetterQueue', Action: ['sqs:SendMessage'], Resource: 'Queue.Arn' }),
    ]);
  });
});

describe('the token key policy', () => {
  const keyPolicy = () => {
    const keys = ofType(assembly.statefulJson, 'AWS::KMS::Key');
    expect(keys).toHaveLength(1);
    const [, key] = keys[0] as [string, (typeof keys)[number][1]];
    return (key.Properties?.KeyPolicy as { Statement: Statement[] }).Statement.map(
      (s) => symbolize(assembly, s, assembly.statefulJson) as Statement,
    );
  };
  const actionsOf = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
  const CRYPTO = [
    'kms:Decrypt',
    'kms:Encrypt',
    'kms:GenerateDataKey',
    'kms:ReEncrypt*',
    'kms:GenerateDataKey*',
    'kms:CreateGrant',
  ];

  it('lets only broker roles use it for tokens, only with the token encryption context', () => {
    const tokens = keyPolicy().find((s) => s.Sid === 'BrokerRolesTokenEnvelopes');
    expect(tokens).toEqual({
      Sid: 'BrokerRolesTokenEnvelopes',
      Effect: 'Allow',
      Principal: { AWS: 'arn:aws:iam::111111111111:root' },
      Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
      Resource: '*',
      Condition: {
        ArnLike: { 'aws:PrincipalArn': 'arn:AWS::Partition:iam::AWS::AccountId:role/crm-oauth-broker/*' },
        StringEquals: {
          'kms:CallerAccount': 'AWS::AccountId',
          'kms:EncryptionContext:purpose': 'crm-oauth-broker/tokens',
        },
        'ForAllValues:StringEquals': {
          'kms:EncryptionContextKeys': ['connectionId', 'keySlot', 'ownerId', 'provider', 'purpose'],
        },
      },
    });
  });

  it('allows table encryption only through DynamoDB in this account', () => {
    const table = keyPolicy().find((s) => s.Sid === 'TableEncryptionThroughDynamoDB');
    expect(table?.Condition).toEqual({
      StringEquals: {
        'kms:CallerAccount': 'AWS::AccountId',
        'kms:ViaService': 'dynamodb.AWS::Region.amazonaws.com',
      },
    });
  });

  it('gives no statement cryptographic use of the key without a condition', () => {
    const statements = keyPolicy();
    expect(statements.map((s) => s.Sid).sort()).toEqual([
      'BrokerRolesTokenEnvelopes',
      'DynamoDBDescribesKey',
      'KeyAdministrationWithoutUse',
      'TableEncryptionThroughDynamoDB',
    ]);
    for (const s of statements) {
      const crypto = actionsOf(s).filter((a) => CRYPTO.includes(a) || a === 'kms:*');
      if (crypto.length > 0) expect(s.Condition, s.Sid).toBeDefined();
    }
    const admin = statements.find((s) => s.Sid === 'KeyAdministrationWithoutUse') as Statement;
    for (const a of actionsOf(admin)) expect(CRYPTO).not.toContain(a);
    expect(actionsOf(admin)).not.toContain('kms:*');
  });

  it('admits the role path the function roles really have', () => {
    const tokens = keyPolicy().find((s) => s.Sid === 'BrokerRolesTokenEnvelopes') as Statement;
    const pattern = (tokens.Condition as { ArnLike: Record<string, string> }).ArnLike['aws:PrincipalArn'];
    for (const name of functionNames) {
      const [, role] = functionResource(assembly.statelessJson, 'AWS::IAM::Role', name);
      expect(pattern).toBe(`arn:AWS::Partition:iam::AWS::AccountId:role${role.Properties?.Path as string}*`);
    }
  });
});
