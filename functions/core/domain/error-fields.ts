/** What may be logged of an error: its name and code, never its message chain (a CRM's body may echo input). */
export function errorFields(err: unknown): Record<string, string> {
  const e = err as { name?: unknown; code?: unknown; errorType?: unknown; status?: unknown };
  const out: Record<string, string> = { errorName: typeof e?.name === 'string' ? e.name : 'unknown' };
  if (typeof e?.code === 'string') out.errorCode = e.code;
  if (typeof e?.status === 'number') out.errorStatus = String(e.status);
  return out;
}
