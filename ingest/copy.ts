/**
 * What the importers share: the error that names a bad row, progress reporting, and streaming COPY
 * text into a staging table. The importers own their SQL; this module never touches real tables.
 */
import { InputError } from '../common/failures.js';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type { PoolClient } from '../common/db.js';
import { describeProblem } from './segment.js';

/** How far an import has read: rows so far, bytes so far, and the bytes of all its input files. */
export interface ImportProgress {
  rows: number;
  bytes: number;
  totalBytes: number;
}

/** Receives progress every REPORT_EVERY_ROWS rows and once at the end; the CLI draws a bar. */
export type ProgressListener = (progress: ImportProgress) => void;

/** Rows between two progress reports: often enough for a bar, rare enough to cost nothing. */
export const REPORT_EVERY_ROWS = 50_000;

/** Importers yield COPY text in chunks of about this size, so stream overhead per row vanishes. */
export const COPY_CHUNK_CHARS = 64 * 1024;

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_SPECIAL_ALL = /[\\\t\n\r]/g;
const COPY_ESCAPES: Readonly<Record<string, string>> = {
  '\\': '\\\\',
  '\t': '\\t',
  '\n': '\\n',
  '\r': '\\r',
};

/**
 * Thrown by the importers when a row is malformed: names the file, the 1-based line (the header
 * of a CSV file is line 1), the field and the bad value. Nothing of the import is kept.
 */
export class ImportError extends InputError {
  override readonly name = 'ImportError';

  constructor(
    readonly file: string,
    readonly line: number,
    readonly field: string,
    readonly value: unknown,
    problem: string,
  ) {
    super(describeRow(file, line, field, value, problem));
  }
}

// `ratings.csv line 7: field "rating": "abc" is not a number…` (or without a value).
function describeRow(file: string, line: number, field: string, value: unknown, problem: string) {
  return `${path.basename(file)} line ${line}: ${describeProblem({ field, value, problem })}`;
}

/** Counts rows across the files of one import and reports to the listener now and then. */
export class ProgressMeter {
  private rows = 0;
  private doneBytes = 0;
  private fileBytes = 0;

  constructor(
    private readonly listener: ProgressListener | undefined,
    private readonly totalBytes: number,
  ) {}

  /** One more row; `fileBytes` is how much of the current file has been read. */
  row(fileBytes: number): void {
    this.rows += 1;
    this.fileBytes = fileBytes;
    if (this.rows % REPORT_EVERY_ROWS === 0) this.report();
  }

  /** The current file is read to its end (`size` bytes). */
  fileDone(size: number): void {
    this.doneBytes += size;
    this.fileBytes = 0;
  }

  /** Reports the final figures. */
  finish(): void {
    this.report();
  }

  private report(): void {
    const bytes = Math.min(this.doneBytes + this.fileBytes, this.totalBytes);
    this.listener?.({ rows: this.rows, bytes, totalBytes: this.totalBytes });
  }
}

/** One value in COPY text format: backslash, tab and line breaks escaped; null as `\N`. */
export function copyValue(value: string | null): string {
  if (value === null) return '\\N';
  return COPY_SPECIAL.test(value) ? value.replace(COPY_SPECIAL_ALL, escapeCopyChar) : value;
}

function escapeCopyChar(char: string): string {
  return COPY_ESCAPES[char] ?? char;
}

/**
 * Streams chunks of COPY text rows into a table on the transaction's client. When `chunks` throws
 * (a bad row), the COPY is aborted and that error is rethrown, so the transaction rolls back.
 */
export async function copyInto(
  client: PoolClient,
  table: string,
  columns: readonly string[],
  chunks: AsyncIterable<string>,
): Promise<void> {
  const copy = client.query(copyFrom(`copy ${table} (${columns.join(', ')}) from stdin`));
  await pipeline(chunks, copy);
}

/** The file's size in bytes, or null when it does not exist. */
export async function fileSize(file: string): Promise<number | null> {
  try {
    return (await fs.promises.stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
