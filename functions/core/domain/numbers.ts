/**
 * A whole number from `min` to `max`, or undefined. With `fromText` (the
 * environment, CDK context) a string of decimal digits counts too; `0x10`,
 * `1e3`, `1.0` or padding never do.
 */
export function integerIn(value: unknown, min: number, max: number, fromText = false): number | undefined {
  const n =
    typeof value === 'number'
      ? value
      : fromText && typeof value === 'string' && /^-?\d{1,15}$/.test(value)
        ? Number(value)
        : NaN;
  return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
}
