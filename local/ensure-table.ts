/** Creates the broker's table if it is missing (local server, DynamoDB Local, tests). */
import {
  CreateTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import { TTL_ATTRIBUTE, tableDefinition } from '../manifest/table.ts';

const isNamed = (err: unknown, name: string) => (err as Error | undefined)?.name === name;

export async function ensureTable(client: DynamoDBClient, tableName: string): Promise<void> {
  let exists = true;
  try {
    await client.send(new DescribeTableCommand({ TableName: tableName }));
  } catch (err) {
    if (!isNamed(err, 'ResourceNotFoundException')) throw err;
    exists = false;
  }
  if (!exists) {
    try {
      await client.send(new CreateTableCommand(tableDefinition(tableName)));
    } catch (err) {
      if (!isNamed(err, 'ResourceInUseException')) throw err;
    }
    for (let i = 0; i < 100; i++) {
      const out = await client.send(new DescribeTableCommand({ TableName: tableName }));
      const indexesActive = (out.Table?.GlobalSecondaryIndexes ?? []).every(
        (g) => g.IndexStatus === 'ACTIVE',
      );
      if (out.Table?.TableStatus === 'ACTIVE' && indexesActive) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      await client.send(
        new UpdateTimeToLiveCommand({
          TableName: tableName,
          TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
        }),
      );
    } catch {
      // dynalite has no TTL settings; expiry is checked in code anyway (security.md row 4).
    }
  }
}
