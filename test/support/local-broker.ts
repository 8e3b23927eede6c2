/**
 * Starts the local broker (in memory, sandbox CRMs, no schedule) for a test file, with a Lambda client for it.
 * It records what each function sends to AWS; `close()` fails (and with it the file's `afterAll`) if a
 * function sent a command its manifest entry does not grant (recorded-commands.ts).
 */
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { type LocalServer, type LocalServerOptions, startLocalServer } from '../../local/server.ts';
import { functionAccess } from '../../manifest/access.ts';
import { CommandRecorder } from './recorded-commands.ts';

export interface TestBroker {
  server: LocalServer;
  lambda: LambdaClient;
  /** Invokes through the Lambda Invoke API; returns the payload, or the function error. */
  invoke(
    name: string,
    payload: unknown,
  ): Promise<{ ok: true; value: any } | { ok: false; errorType: string; errorMessage: string }>;
  /** Every item in the table, raw (as stored). */
  scan(): Promise<Record<string, unknown>[]>;
  /** What each function sent to AWS, and called of ports it is not granted. */
  commands: CommandRecorder;
  /** Stops the broker; throws if a function sent a command its manifest entry does not grant. */
  close(): Promise<void>;
}

/** Longest a test waits for one invocation's answer (the tests' own timeout is 60 s). */
const INVOKE_TIMEOUT_MS = 45_000;

export async function startTestBroker(options: LocalServerOptions = {}): Promise<TestBroker> {
  const commands = new CommandRecorder();
  const server = await startLocalServer({
    port: 0,
    dataDir: null,
    schedule: false,
    env: {},
    ...options,
    overrides: { ...options.overrides, observer: commands },
  });
  const lambda = new LambdaClient({
    endpoint: server.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
    // An invocation that never answers fails naming its function, before the test's own timeout.
    requestHandler: { requestTimeout: INVOKE_TIMEOUT_MS, throwOnRequestTimeout: true },
  });
  return {
    server,
    lambda,
    async invoke(name, payload) {
      const out = await lambda
        .send(new InvokeCommand({ FunctionName: name, Payload: Buffer.from(JSON.stringify(payload)) }))
        .catch((err: unknown) => {
          throw new Error(`invoking ${name} through the local Invoke API failed: ${(err as Error).name}`, {
            cause: err,
          });
        });
      const body = out.Payload ? JSON.parse(Buffer.from(out.Payload).toString('utf8')) : null;
      if (out.FunctionError) return { ok: false, errorType: body.errorType, errorMessage: body.errorMessage };
      return { ok: true, value: body };
    },
    async scan() {
      const out = await server.dynamo.send(new ScanCommand({ TableName: server.deps.config.tableName }));
      return (out.Items ?? []).map((i) => unmarshall(i));
    },
    commands,
    async close() {
      lambda.destroy();
      await server.close();
      commands.detach();
      commands.assertWithinGrants(options.overrides?.grants ?? functionAccess, server.deps.config.tableName);
    },
  };
}
