import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Prints an aligned table to stdout and writes the same data as JSON to bench/results/<name>.json. */
export function report(name: string, title: string, rows: Record<string, string | number>[], extra: Record<string, unknown> = {}): string {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: string | number | undefined) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : (v ?? ''));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ');
  process.stdout.write(
    `\n${title}\n${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${rows.map((r) => line(columns.map((c) => cell(r[c])))).join('\n')}\n`,
  );
  const dir = fileURLToPath(new URL('../../../bench/results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify({ name, title, date: new Date().toISOString(), rows, ...extra }, null, 2)}\n`);
  return file;
}
