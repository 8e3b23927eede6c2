/** Starts the local broker (in memory, sandbox CRMs, no schedule) for a test file, with a Lambda client for it. */
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { type LocalServer, type LocalServerOptions, startLocalServer } from '../../local/server.ts';

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
  close(): Promise<void>;
}

export async function startTestBroker(options: LocalServerOptions = {}): Promise<TestBroker> {
  const server = await startLocalServer({ port: 0, dataDir: null, schedule: false, env: {}, ...options });
  const lambda = new LambdaClient({
    endpoint: server.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
  return {
    server,
    lambda,
    async invoke(name, payload) {
      const out = await lambda.send(
        new InvokeCommand({ FunctionName: name, Payload: Buffer.from(JSON.stringify(payload)) }),
      );
      const body = out.Payload ? JSON.parse(Buffer.from(out.Payload).toString('utf8')) : null;
      if (out.FunctionError) return { ok: false, errorType: body.errorType, errorMessage: body.errorMessage };
      return { ok: true, value: body };
    },
    async scan() {
      const out = await server.dynamo.send(new ScanCommand({ TableName: server.deps.config.tableName }));
      return (out.Items ?? []).map((i) => unmarshall(i));
    },
    async close() {
      lambda.destroy();
      await server.close();
    },
  };
}
