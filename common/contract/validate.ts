import type { z } from 'zod';

/** One problem in a contract document: the field's path (`endpoints[1].address`) and what is wrong. */
export interface ContractIssue {
  field: string;
  message: string;
}

/**
 * A document that does not satisfy the contract. The message lists every issue as
 * `field: problem`, so a user reading a log line or an admission warning knows what to fix.
 */
export class ContractError extends Error {
  override readonly name = 'ContractError';
  constructor(
    readonly document: string,
    readonly issues: ContractIssue[],
  ) {
    super(`invalid ${document}: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
  }
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z_$][\w$]*$/.test(key)) out += out ? `.${key}` : key;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out || '(document)';
}

export function issuesOf(error: z.ZodError): ContractIssue[] {
  return error.issues.map((issue) => ({ field: formatPath(issue.path), message: describeIssue(issue) }));
}

function describeIssue(issue: z.core.$ZodIssue): string {
  // zod's own text for a missing key ("expected string, received undefined") hides the point.
  if (issue.code === 'invalid_type' && issue.message.endsWith('received undefined')) {
    return `required, expected ${issue.expected}`;
  }
  return issue.message;
}

/** Parses `data` with `schema`, throwing a ContractError that names each bad field. */
export function parseDocument<S extends z.ZodType>(schema: S, data: unknown, document: string): z.output<S> {
  const result = schema.safeParse(data);
  if (!result.success) throw new ContractError(document, issuesOf(result.error));
  return result.data;
}

/** Like parseDocument, but returns the issues instead of throwing. */
export function checkDocument<S extends z.ZodType>(schema: S, data: unknown): { ok: true; value: z.output<S> } | { ok: false; issues: ContractIssue[] } {
  const result = schema.safeParse(data);
  return result.success ? { ok: true, value: result.data } : { ok: false, issues: issuesOf(result.error) };
}
