/**
 * Imports a MovieLens directory (`ratings.csv`, optionally `movies.csv`) into `events` and `items`.
 * The files are streamed, checked row by row in Node (so an error names its line), copied into
 * staging tables and moved into the real tables by one statement each, all in one transaction:
 * a bad row anywhere leaves nothing of the import behind. Re-importing adds nothing. The ratings
 * of a deleted person (a user id with a tombstone, domain/privacy/tombstones.ts) are dropped and
 * counted, as the NDJSON import drops a deleted person's messages.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CsvError, parse } from 'csv-parse';
import { type Pool, type PoolClient, withTransaction } from '../common/db.js';
import type { IdentityRules } from '../domain/identity/rules.js';
import {
  dropTombstonedStaged,
  hashesLiteral,
  messageHashes,
} from '../domain/privacy/tombstones.js';
import {
  COPY_CHUNK_CHARS,
  copyInto,
  copyValue,
  fileSize,
  ImportError,
  type ProgressListener,
  ProgressMeter,
} from './copy.js';

export { ImportError, type ImportProgress, type ProgressListener } from './copy.js';

/** Options of `importMovieLens`. */
export interface MovieLensImportOptions {
  /** Namespaces the rows (events.source, items.source); defaults to the directory's name. */
  source?: string;
  onProgress?: ProgressListener;
  /** The identity rules (POPS_IDENTITY_RULES): what a user id is checked as, for tombstones. */
  identityRules?: IdentityRules;
}

/** Rows read from a file and rows that were new to the database. */
export interface ImportCounts {
  read: number;
  inserted: number;
}

/** The ratings' counts, and the rows of deleted persons (a tombstoned user id): not stored. */
export interface RatingCounts extends ImportCounts {
  dropped: number;
}

/** What `importMovieLens` did. */
export interface MovieLensImportResult {
  source: string;
  ratings: RatingCounts;
  movies: ImportCounts;
  seconds: number;
}

type Positions<C extends string> = Readonly<Record<C, number>>;

/** Turns one CSV record into a COPY text row, or throws an ImportError naming the bad field. */
type Encoder<C extends string> = (
  file: string,
  fields: readonly string[],
  at: Positions<C>,
  line: number,
) => string;

/** A CSV file, the header columns it must have, and the staging table its rows go to. */
interface CsvTable<C extends string> {
  file: string;
  columns: readonly C[];
  encode: Encoder<C>;
  staging: string;
  stagingColumns: readonly string[];
}

const RATING_COLUMNS = ['userId', 'movieId', 'rating', 'timestamp'] as const;
const MOVIE_COLUMNS = ['movieId', 'title', 'genres'] as const;
type RatingColumn = (typeof RATING_COLUMNS)[number];
type MovieColumn = (typeof MOVIE_COLUMNS)[number];

const POSITIVE_INTEGER = /^[1-9][0-9]*$/;
const UNIX_SECONDS = /^[0-9]{1,12}$/;
const NO_NUL = /^[^\0]*$/;
const NOT_POSITIVE = 'is not a positive integer';
const HAS_NUL = 'contains a NUL character, which PostgreSQL cannot store';
const NOT_SECONDS = 'is not a whole number of unix seconds';

// relax_column_count: the row width is checked here, so the error can name the field.
const CSV_OPTIONS = { bom: true, relax_column_count: true } as const;

/** Imports `<dir>/ratings.csv` (and `<dir>/movies.csv` when present) in one transaction. */
export async function importMovieLens(
  pool: Pool,
  dir: string,
  options: MovieLensImportOptions = {},
): Promise<MovieLensImportResult> {
  const started = performance.now();
  const source = options.source ?? path.basename(path.resolve(dir));
  if (source.trim() === '') throw new Error('importMovieLens: source must not be empty');

  const ratingsFile = path.join(dir, 'ratings.csv');
  const moviesFile = path.join(dir, 'movies.csv');
  const ratingsSize = await fileSize(ratingsFile);
  if (ratingsSize === null) throw new Error(`MovieLens import: ${ratingsFile} does not exist`);
  const moviesSize = await fileSize(moviesFile);
  const meter = new ProgressMeter(options.onProgress, ratingsSize + (moviesSize ?? 0));

  const counts = await withTransaction(pool, async (client) => {
    const movies =
      moviesSize === null
        ? { read: 0, inserted: 0 }
        : await importMovies(client, moviesFile, source, meter);
    const ratings = await importRatings(client, ratingsFile, source, meter, options.identityRules);
    return { movies, ratings };
  });
  meter.finish();
  return { source, ...counts, seconds: (performance.now() - started) / 1000 };
}

async function importRatings(
  client: PoolClient,
  file: string,
  source: string,
  meter: ProgressMeter,
  rules: IdentityRules | undefined,
): Promise<RatingCounts> {
  await client.query(
    `create temp table import_ratings (
       user_id text not null, movie_id text not null, rating double precision not null,
       ts bigint not null, id_hashes text[] not null
     ) on commit drop`,
  );
  const read = await copyCsv(client, meter, {
    file,
    columns: RATING_COLUMNS,
    encode: ratingEncoder(rules),
    staging: 'import_ratings',
    stagingColumns: ['user_id', 'movie_id', 'rating', 'ts', 'id_hashes'],
  });
  // Ratings of deleted persons are not imported, as the NDJSON import's messages are not.
  const { dropped } = await dropTombstonedStaged(client, source, {
    table: 'import_ratings',
    quarantinable: false,
  });
  const inserted = await client.query(
    `insert into events
       (message_id, source, type, event, person_id, user_id, item_id, ts, properties)
     select $1::text || ':rating:' || user_id || ':' || movie_id, $1::text, 'track', 'rated',
            user_id, user_id, movie_id, to_timestamp(ts::double precision),
            jsonb_build_object('rating', rating)
       from import_ratings
     on conflict (message_id) do nothing`,
    [source],
  );
  return { read, inserted: inserted.rowCount ?? 0, dropped };
}

async function importMovies(
  client: PoolClient,
  file: string,
  source: string,
  meter: ProgressMeter,
): Promise<ImportCounts> {
  await client.query(
    `create temp table import_movies (
       item_id text not null, title text not null, genres text not null
     ) on commit drop`,
  );
  const read = await copyCsv(client, meter, {
    file,
    columns: MOVIE_COLUMNS,
    encode: encodeMovie,
    staging: 'import_movies',
    stagingColumns: ['item_id', 'title', 'genres'],
  });
  const inserted = await client.query(
    `insert into items (source, item_id, title, genres)
     select $1::text, item_id, title,
            case when genres in ('', '(no genres listed)') then '{}'::text[]
                 else string_to_array(genres, '|') end
       from import_movies
     on conflict (source, item_id) do nothing`,
    [source],
  );
  return { read, inserted: inserted.rowCount ?? 0 };
}

/** Copies the checked rows of a CSV file into its staging table; returns the number of rows. */
async function copyCsv<C extends string>(
  client: PoolClient,
  meter: ProgressMeter,
  table: CsvTable<C>,
): Promise<number> {
  const counter = { rows: 0 };
  await copyInto(client, table.staging, table.stagingColumns, csvChunks(table, meter, counter));
  return counter.rows;
}

/**
 * Yields COPY text, one row per CSV record, in chunks; checks the header first. Lines are counted
 * here (a quoted field may span lines) because the parser's own count runs ahead of the consumer.
 */
async function* csvChunks<C extends string>(
  table: CsvTable<C>,
  meter: ProgressMeter,
  counter: { rows: number },
): AsyncGenerator<string> {
  const input = fs.createReadStream(table.file);
  const parser = parse(CSV_OPTIONS);
  input.once('error', (err) => parser.destroy(err));
  input.pipe(parser);
  let at: Positions<C> | undefined;
  let width = 0;
  let line = 1;
  let chunk = '';
  try {
    for await (const fields of parser as AsyncIterable<string[]>) {
      if (at === undefined) {
        at = headerPositions(table, fields);
        width = fields.length;
      } else if (!isBlank(fields)) {
        checkWidth(table.file, fields, width, line);
        chunk += table.encode(table.file, fields, at, line);
        counter.rows += 1;
        meter.row(input.bytesRead);
      }
      line += linesSpanned(fields);
      if (chunk.length >= COPY_CHUNK_CHARS) {
        yield chunk;
        chunk = '';
      }
    }
  } catch (err) {
    throw err instanceof CsvError ? fromCsvError(table.file, err) : err;
  } finally {
    input.destroy();
  }
  if (at === undefined) throw headerError(table, table.columns[0] ?? '', 'the file is empty');
  if (chunk.length > 0) yield chunk;
  meter.fileDone(input.bytesRead);
}

/** Where each required column sits in the header; extra columns are ignored. */
function headerPositions<C extends string>(
  table: CsvTable<C>,
  header: readonly string[],
): Positions<C> {
  const names = header.map((name) => name.trim());
  const at: Partial<Record<C, number>> = {};
  for (const column of table.columns) {
    const index = names.indexOf(column);
    if (index === -1) throw headerError(table, column, `need ${table.columns.join(',')}`);
    at[column] = index;
  }
  return at as Positions<C>;
}

function headerError<C extends string>(table: CsvTable<C>, column: string, why: string) {
  return new ImportError(table.file, 1, column, undefined, `is missing from the header (${why})`);
}

// A blank line parses as one empty field; MovieLens has none, but one at the end is harmless.
function isBlank(fields: readonly string[]): boolean {
  return fields.length === 1 && fields[0] === '';
}

// A row wider than the header most likely has an unquoted comma that shifts the fields after it.
function checkWidth(file: string, fields: readonly string[], width: number, line: number): void {
  if (fields.length <= width) return;
  const problem = `is one field too many: the header has ${width} columns (an unquoted comma?)`;
  throw new ImportError(file, line, `column ${width + 1}`, fields[width], problem);
}

function linesSpanned(fields: readonly string[]): number {
  let lines = 1;
  for (const field of fields) {
    for (let at = field.indexOf('\n'); at !== -1; at = field.indexOf('\n', at + 1)) lines += 1;
  }
  return lines;
}

function fromCsvError(file: string, err: CsvError): ImportError {
  const line = typeof err['lines'] === 'number' ? err['lines'] : 0;
  const column = typeof err['column'] === 'number' ? `column ${err['column'] + 1}` : '(row)';
  return new ImportError(file, line, column, undefined, `is not valid CSV: ${err.message}`);
}

/**
 * The field `column` of the record, checked against `pattern`; throws an ImportError naming the
 * field when the record is too short to have it or the value does not match.
 */
function checked<C extends string>(
  file: string,
  fields: readonly string[],
  at: Positions<C>,
  line: number,
  column: C,
  pattern: RegExp,
  problem: string,
): string {
  const value = fields[at[column]];
  if (value === undefined) throw new ImportError(file, line, column, undefined, 'is missing');
  if (!pattern.test(value)) throw new ImportError(file, line, column, value, problem);
  return value;
}

/**
 * The rating encoder; each row carries the keyed hashes of its user id as a message's would be
 * (domain/privacy/tombstones.ts), computed once per user.
 */
function ratingEncoder(rules: IdentityRules | undefined): Encoder<RatingColumn> {
  const hashes = new Map<string, string>();
  const hashesOf = (user: string): string => {
    let literal = hashes.get(user);
    if (literal === undefined) {
      const row = { user_id: user, anonymous_id: null, previous_id: null };
      literal = hashesLiteral(messageHashes({ row, fields: {} }, rules));
      hashes.set(user, literal);
    }
    return literal;
  };
  return (file, fields, at, line) => encodeRating(file, fields, at, line, hashesOf);
}

// Runs 100k+ times per import: a few regex tests and one template string per row.
const encodeRating = (
  file: string,
  fields: readonly string[],
  at: Positions<RatingColumn>,
  line: number,
  hashesOf: (user: string) => string,
): string => {
  const user = checked(file, fields, at, line, 'userId', POSITIVE_INTEGER, NOT_POSITIVE);
  const movie = checked(file, fields, at, line, 'movieId', POSITIVE_INTEGER, NOT_POSITIVE);
  const text = checked(file, fields, at, line, 'rating', NO_NUL, HAS_NUL);
  // Number() accepts forms like "4e0" or " 4"; the number, not the text, goes to COPY.
  const rating = Number(text);
  if (!(rating >= 0.5 && rating <= 5)) {
    throw new ImportError(file, line, 'rating', text, 'is not a number between 0.5 and 5');
  }
  const ts = checked(file, fields, at, line, 'timestamp', UNIX_SECONDS, NOT_SECONDS);
  return `${user}\t${movie}\t${rating}\t${ts}\t${hashesOf(user)}\n`;
};

const encodeMovie: Encoder<MovieColumn> = (file, fields, at, line) => {
  const movie = checked(file, fields, at, line, 'movieId', POSITIVE_INTEGER, NOT_POSITIVE);
  const title = checked(file, fields, at, line, 'title', NO_NUL, HAS_NUL);
  const genres = checked(file, fields, at, line, 'genres', NO_NUL, HAS_NUL);
  return `${movie}\t${copyValue(title)}\t${copyValue(genres)}\n`;
};
