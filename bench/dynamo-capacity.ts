/**
 * DynamoDB capacity units, for the benchmarks: what a client's commands cost,
 * as the store reports it (`ReturnConsumedCapacity: 'INDEXES'`) and as
 * DynamoDB's documented rules compute it from the item images before and after
 * each write.
 *
 * Both are kept because the local stores differ (bench/capacity-probe.ts runs
 * the same operations on both, next to the rules):
 * - DynamoDB Local reports what the rules give for every successful write
 *   probed: table and index units, an index key change as a delete and a put,
 *   nothing for an index entry that did not change, the larger of the item
 *   before and after; and for reads, except a Query that finds nothing, which
 *   it reports as 0 units where DynamoDB bills the minimum;
 * - dynalite reports a write's table units only, never its index units, and
 *   an empty Query as 0 too;
 * - neither reports a failed conditional write, nor can they: the error
 *   carries no `ConsumedCapacity` in the API (DynamoDB's neither), though
 *   DynamoDB bills it. Those are computed here from the item as it was.
 * So the benchmarks print the units by the rules, from the images measured,
 * and check DynamoDB Local's reports against them where it reports right.
 *
 * The rules (Amazon DynamoDB Developer Guide: "DynamoDB item sizes and
 * formats", "Read/write capacity units", "Global secondary indexes: provisioned
 * throughput considerations"):
 * - a write costs 1 unit per 1 KB of the larger of the item before and after;
 *   a write whose condition fails costs the item as it is (at least 1), and
 *   nothing in the indexes ("Working with items: conditional writes");
 * - per index: an entry put (the item gains the index keys) or deleted (it
 *   loses them) is 1 unit per 1 KB of the entry; an index key that changes is
 *   a delete and a put; a projected attribute that changes, 1 write of the
 *   entry; an entry that does not change, nothing. An entry is the table's
 *   keys, the index's keys and the projected attributes;
 * - a read costs 1 unit per 4 KB (half for eventually consistent), at least
 *   one 4 KB step even for no item (a Query that finds nothing included: "the
 *   minimum read capacity units according to the type of read", Query API
 *   reference); a Query sums the sizes of the items (or index entries) it
 *   returns, then rounds up.
 */
import {
  type AttributeValue,
  type CreateTableCommandInput,
  type DynamoDBClient,
  GetItemCommand,
  type GlobalSecondaryIndex,
} from '@aws-sdk/client-dynamodb';

export type Item = Record<string, AttributeValue>;

/** Units by table and by index name. */
export interface Units {
  table: number;
  indexes: Record<string, number>;
}

/** What one kind of command (by sender, command, item kind and what it changed) cost. */
export interface CapacityBucket {
  /** The meter's name (which function's client sent it). */
  source: string;
  command: string;
  /** The item's `pk` prefix (`CONN`, `KEYRING`, ...) or, for a Query, the index it read. */
  item: string;
  /**
   * Attributes a successful write changed (sorted, joined by `,`; `created`, `deleted`), `failed`
   * for a failed condition; for a read, `none found` when it found nothing, else empty.
   */
  changed: string;
  calls: number;
  /** `variant`: computed on the images as the meter's `variant` rewrites them (zero without one). */
  writes: { reported: Units; computed: Units; variant: Units };
  reads: { reported: Units; computed: Units };
}

export interface CapacityMeter {
  /** Buckets by `source command item changed`. */
  readonly buckets: Map<string, CapacityBucket>;
  /** The largest item image seen per item kind, in bytes (DynamoDB's item size), with the item. */
  readonly largest: Map<string, { bytes: number; item: Item }>;
  reset(): void;
}

export const emptyUnits = (): Units => ({ table: 0, indexes: {} });
/** Table and index units together. */
export const totalUnits = (u: Units) => Object.values(u.indexes).reduce((a, n) => a + n, u.table);

// Item sizes.

const utf8 = (s: string) => Buffer.byteLength(s, 'utf8');

/** Significant digits of a DynamoDB number: no sign, no point, no leading or trailing zeros. */
function significantDigits(n: string): number {
  const digits = n
    .replace(/^[-+]/, '')
    .replace(/[eE].*$/, '')
    .replace('.', '')
    .replace(/^0+/, '')
    .replace(/0+$/, '');
  return Math.max(1, digits.length);
}

/** Size of a value, without its attribute name. */
function valueSize(value: AttributeValue): number {
  if (value.S !== undefined) return utf8(value.S);
  if (value.N !== undefined) return Math.ceil(significantDigits(value.N) / 2) + 1;
  if (value.B !== undefined) return value.B.byteLength;
  if (value.BOOL !== undefined || value.NULL !== undefined) return 1;
  if (value.SS !== undefined) return value.SS.reduce((a, s) => a + utf8(s), 0);
  if (value.NS !== undefined)
    return value.NS.reduce((a, n) => a + Math.ceil(significantDigits(n) / 2) + 1, 0);
  if (value.BS !== undefined) return value.BS.reduce((a, b) => a + b.byteLength, 0);
  // A list or a map: 3 bytes, plus 1 per element, plus the elements (a map's with their names).
  if (value.L !== undefined) return 3 + value.L.reduce((a, v) => a + 1 + valueSize(v), 0);
  if (value.M !== undefined) {
    return 3 + Object.entries(value.M).reduce((a, [k, v]) => a + 1 + utf8(k) + valueSize(v), 0);
  }
  return 0;
}

/** DynamoDB's size of an item: attribute name bytes plus value bytes (see the file comment). */
export function itemSize(item: Item | undefined): number {
  if (!item) return 0;
  return Object.entries(item).reduce((a, [name, value]) => a + utf8(name) + valueSize(value), 0);
}

const writeUnits = (bytes: number) => Math.max(1, Math.ceil(bytes / 1024));
const readSteps = (bytes: number) => Math.max(1, Math.ceil(bytes / 4096));

// Index entries.

const keyNames = (table: CreateTableCommandInput) =>
  (table.KeySchema ?? []).map((k) => k.AttributeName ?? '');

/** The item's entry in `index`, or undefined when it lacks one of the index's keys (not in the index). */
function indexEntry(table: CreateTableCommandInput, index: GlobalSecondaryIndex, item: Item | undefined) {
  if (!item) return undefined;
  const indexKeys = (index.KeySchema ?? []).map((k) => k.AttributeName ?? '');
  if (indexKeys.some((k) => item[k] === undefined)) return undefined;
  const projection = index.Projection ?? {};
  const projected =
    projection.ProjectionType === 'ALL'
      ? Object.keys(item)
      : projection.ProjectionType === 'INCLUDE'
        ? (projection.NonKeyAttributes ?? [])
        : [];
  const entry: Item = {};
  for (const name of [...keyNames(table), ...indexKeys, ...projected]) {
    const value = item[name];
    if (value !== undefined) entry[name] = value;
  }
  return { keys: indexKeys, entry };
}

const sameValue = (a: AttributeValue | undefined, b: AttributeValue | undefined) =>
  JSON.stringify(a) === JSON.stringify(b);
const sameItem = (a: Item, b: Item) =>
  Object.keys(a).length === Object.keys(b).length && Object.keys(a).every((k) => sameValue(a[k], b[k]));

/** What a write costs by the rules, from the item before and after (`after` undefined: deleted). */
export function writeCost(
  table: CreateTableCommandInput,
  before: Item | undefined,
  after: Item | undefined,
  conditionFailed: boolean,
): Units {
  if (conditionFailed) return { table: writeUnits(itemSize(before)), indexes: {} };
  const units: Units = { table: writeUnits(Math.max(itemSize(before), itemSize(after))), indexes: {} };
  for (const index of table.GlobalSecondaryIndexes ?? []) {
    const old = indexEntry(table, index, before);
    const now = indexEntry(table, index, after);
    let cost = 0;
    if (old && !now) cost = writeUnits(itemSize(old.entry));
    else if (!old && now) cost = writeUnits(itemSize(now.entry));
    else if (old && now) {
      const keyMoved = old.keys.some((k) => !sameValue(old.entry[k], now.entry[k]));
      if (keyMoved) cost = writeUnits(itemSize(old.entry)) + writeUnits(itemSize(now.entry));
      else if (!sameItem(old.entry, now.entry))
        cost = writeUnits(Math.max(itemSize(old.entry), itemSize(now.entry)));
    }
    if (cost > 0) units.indexes[index.IndexName ?? ''] = cost;
  }
  return units;
}

/** What a read of items of `bytes` in all costs by the rules. */
export const readCost = (bytes: number, consistent: boolean) => readSteps(bytes) * (consistent ? 1 : 0.5);

/** Attribute names whose values differ between two images. */
function changedAttributes(before: Item | undefined, after: Item | undefined): string {
  if (!before) return 'created';
  if (!after) return 'deleted';
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names]
    .filter((n) => !sameValue(before[n], after[n]))
    .sort()
    .join(',');
}

// The meter.

const WRITES = new Set(['PutItem', 'UpdateItem', 'DeleteItem']);
const SINGLE_READS = new Set(['GetItem']);
const ACCEPTS_CAPACITY = new Set([
  ...WRITES,
  ...SINGLE_READS,
  'Query',
  'Scan',
  'BatchGetItem',
  'BatchWriteItem',
  'TransactGetItems',
  'TransactWriteItems',
]);

interface Reported {
  CapacityUnits?: number;
  Table?: { CapacityUnits?: number };
  GlobalSecondaryIndexes?: Record<string, { CapacityUnits?: number }>;
}

export function addUnits(into: Units, units: Units) {
  into.table += units.table;
  for (const [name, n] of Object.entries(units.indexes)) into.indexes[name] = (into.indexes[name] ?? 0) + n;
}

function reportedUnits(consumed: Reported | Reported[] | undefined): Units {
  const units = emptyUnits();
  for (const c of [consumed ?? []].flat()) {
    units.table += c.Table?.CapacityUnits ?? (c.GlobalSecondaryIndexes ? 0 : (c.CapacityUnits ?? 0));
    for (const [name, i] of Object.entries(c.GlobalSecondaryIndexes ?? {})) {
      units.indexes[name] = (units.indexes[name] ?? 0) + (i.CapacityUnits ?? 0);
    }
  }
  return units;
}

const itemKind = (item: Item | undefined) => item?.pk?.S?.split('#')[0] ?? 'other';
const isConditionFailure = (err: unknown) => (err as Error)?.name === 'ConditionalCheckFailedException';

/**
 * Meters `client`: every command that accepts it asks for `ReturnConsumedCapacity:
 * 'INDEXES'` (a copy of the input: the caller's command is untouched, and its
 * answer only gains `ConsumedCapacity`), and what it reports is summed per
 * bucket. With `images` (another client of the same store, not metered),
 * single-item writes are also computed by the rules from the item read before
 * (a consistent GetItem) and after (the answer's `ALL_NEW`, or another read):
 * for a bench, not for timing, since it adds up to two reads per write, and
 * only right while nobody else writes the same item between them. With
 * `variant` too, the same writes are computed once more on the images as
 * `variant` rewrites them (what they would cost with another item size).
 */
export function meterCapacity(
  client: DynamoDBClient,
  options: {
    source: string;
    table: CreateTableCommandInput;
    images?: DynamoDBClient;
    variant?: (item: Item) => Item;
  },
): CapacityMeter {
  const variant = (item: Item | undefined) => (item && options.variant ? options.variant(item) : item);
  const buckets = new Map<string, CapacityBucket>();
  const largest = new Map<string, { bytes: number; item: Item }>();
  const seen = (item: Item | undefined) => {
    if (!item) return;
    const kind = itemKind(item);
    const bytes = itemSize(item);
    if (bytes > (largest.get(kind)?.bytes ?? -1)) largest.set(kind, { bytes, item });
  };
  const bucket = (command: string, item: string, changed: string) => {
    const key = `${options.source} ${command} ${item} ${changed}`;
    let b = buckets.get(key);
    if (!b) {
      b = {
        source: options.source,
        command,
        item,
        changed,
        calls: 0,
        writes: { reported: emptyUnits(), computed: emptyUnits(), variant: emptyUnits() },
        reads: { reported: emptyUnits(), computed: emptyUnits() },
      };
      buckets.set(key, b);
    }
    b.calls++;
    return b;
  };
  const read = async (key: Item | undefined) =>
    key && options.images
      ? (
          await options.images.send(
            new GetItemCommand({ TableName: options.table.TableName, Key: key, ConsistentRead: true }),
          )
        ).Item
      : undefined;
  const keyOf = (input: { Key?: Item; Item?: Item }): Item | undefined => {
    if (input.Key) return input.Key;
    if (!input.Item) return undefined;
    return Object.fromEntries(keyNames(options.table).map((k) => [k, input.Item?.[k] as AttributeValue]));
  };

  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = String(context.commandName).replace(/Command$/, '');
      if (!ACCEPTS_CAPACITY.has(command)) return next(args);
      const input: Record<string, unknown> = { ...(args.input as object), ReturnConsumedCapacity: 'INDEXES' };
      const key = keyOf(input as { Key?: Item; Item?: Item });
      const computeWrite = WRITES.has(command) && options.images !== undefined;
      const before = computeWrite ? await read(key) : undefined;
      seen(before);
      let out;
      try {
        out = await next({ ...args, input });
      } catch (err) {
        if (isConditionFailure(err) && WRITES.has(command)) {
          const b = bucket(command, itemKind(before ?? key), 'failed');
          if (computeWrite) {
            addUnits(b.writes.computed, writeCost(options.table, before, undefined, true));
            if (options.variant) {
              addUnits(b.writes.variant, writeCost(options.table, variant(before), undefined, true));
            }
          }
        }
        throw err;
      }
      const output = out.output as {
        ConsumedCapacity?: Reported | Reported[];
        Attributes?: Item;
        Item?: Item;
        Items?: Item[];
      };
      const reported = reportedUnits(output.ConsumedCapacity);
      if (WRITES.has(command)) {
        let after: Item | undefined;
        if (computeWrite && command !== 'DeleteItem') {
          after = input.ReturnValues === 'ALL_NEW' && output.Attributes ? output.Attributes : await read(key);
        }
        seen(after);
        const b = bucket(
          command,
          itemKind(before ?? after ?? key),
          computeWrite ? changedAttributes(before, after) : '',
        );
        addUnits(b.writes.reported, reported);
        if (computeWrite) {
          addUnits(b.writes.computed, writeCost(options.table, before, after, false));
          if (options.variant) {
            addUnits(b.writes.variant, writeCost(options.table, variant(before), variant(after), false));
          }
        }
        return out;
      }
      const indexName = input.IndexName as string | undefined;
      let items = output.Items ?? (output.Item ? [output.Item] : []);
      // A projected read is billed by the whole item: read it whole.
      if (command === 'GetItem' && input.ProjectionExpression && output.Item && options.images) {
        items = [(await read(key)) ?? output.Item];
      }
      for (const item of indexName ? [] : items) seen(item);
      // Reads that found nothing apart: a store may report them differently (bench/capacity-probe.ts).
      const b = bucket(command, indexName ?? itemKind(key ?? items[0]), items.length ? '' : 'none found');
      addUnits(b.reads.reported, reported);
      if (command === 'Query' || SINGLE_READS.has(command)) {
        const bytes = items.reduce((a, item) => a + itemSize(item), 0);
        const units = readCost(bytes, input.ConsistentRead === true && !indexName);
        addUnits(
          b.reads.computed,
          indexName ? { table: 0, indexes: { [indexName]: units } } : { table: units, indexes: {} },
        );
      }
      return out;
    },
    { step: 'initialize', name: `benchMeterCapacity-${options.source}` },
  );
  return {
    buckets,
    largest,
    reset: () => {
      buckets.clear();
      largest.clear();
    },
  };
}
