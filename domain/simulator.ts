/**
 * A seeded generator of MovieLens-format data (`ratings.csv`, `movies.csv`), so the demo needs no
 * download. The data has structure a model can learn and a popularity ranking cannot fully use:
 * movies have a latent quality and genres, users have genre tastes, a rating bias and an active
 * period; popularity is Zipf-like and only loosely tied to quality. The same seed writes the same
 * bytes.
 */
import fs from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { z } from 'zod';
import { describeZodError } from '../common/failures.js';
import { mulberry32 } from '../common/random.js';

/** The 18 genres of MovieLens. */
export const MOVIELENS_GENRES = [
  'Action',
  'Adventure',
  'Animation',
  'Children',
  'Comedy',
  'Crime',
  'Documentary',
  'Drama',
  'Fantasy',
  'Film-Noir',
  'Horror',
  'Musical',
  'Mystery',
  'Romance',
  'Sci-Fi',
  'Thriller',
  'War',
  'Western',
] as const;

// How often each genre is drawn, roughly as in MovieLens (drama and comedy common, noir rare).
const GENRE_WEIGHTS = [8, 6, 2, 3, 12, 5, 2, 15, 3, 1, 4, 1, 3, 6, 4, 7, 2, 1];

const TITLE_WORDS = {
  adjectives: ['Silent', 'Last', 'Crimson', 'Hidden', 'Broken', 'Golden', 'Endless', 'Wild'],
  nouns: ['Harbor', 'Summer', 'Machine', 'Garden', 'Frontier', 'Echo', 'Kingdom', 'River'],
};

/** Options of `simulateMovieLens`. */
export interface SimulationOptions {
  users?: number;
  items?: number;
  /** Inclusive range of ratings per user; capped at half the items so sampling stays cheap. */
  ratingsPerUser?: readonly [number, number];
  seed?: number;
  start?: Date;
  end?: Date;
}

/** Rows written to `ratings.csv` and `movies.csv`. */
export interface SimulationResult {
  ratings: number;
  movies: number;
}

// Fixed defaults (never "now"), so the same seed always gives the same files.
const optionsSchema = z
  .object({
    users: z.number().int().positive().default(300),
    items: z.number().int().min(2).default(400),
    ratingsPerUser: z
      .tuple([z.number().int().positive(), z.number().int().positive()])
      .refine(([min, max]) => min <= max, { error: 'min must not exceed max' })
      .default([20, 60]),
    seed: z.number().int().default(42),
    start: z.date().default(new Date('2015-01-01T00:00:00Z')),
    end: z.date().default(new Date('2019-01-01T00:00:00Z')),
  })
  .refine((o) => o.start.getTime() < o.end.getTime(), {
    error: 'must be after start',
    path: ['end'],
  });

type Settings = z.output<typeof optionsSchema>;
type Random = () => number;

interface Movie {
  id: number;
  genres: number[];
  quality: number;
}

interface User {
  id: number;
  bias: number;
  taste: number[];
  from: number;
  to: number;
}

/** Writes `ratings.csv` and `movies.csv` into `dir` (created if needed); same seed, same bytes. */
export async function simulateMovieLens(
  dir: string,
  options: SimulationOptions = {},
): Promise<SimulationResult> {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new Error(`invalid simulation options: ${describeZodError(parsed.error, options)}`);
  }
  const settings = parsed.data;
  const random = mulberry32(settings.seed);
  await fs.promises.mkdir(dir, { recursive: true });

  const movies = makeMovies(settings.items, random);
  await writeMovies(path.join(dir, 'movies.csv'), movies, random);
  const ratings = await writeRatings(path.join(dir, 'ratings.csv'), movies, settings, random);
  return { ratings, movies: movies.length };
}

/** A standard normal draw (Box-Muller). */
function normal(random: Random): number {
  const u = 1 - random(); // in (0, 1], so the log is finite
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function intBetween(random: Random, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

/** Index drawn in proportion to `cumulative` weights (a running sum) by binary search. */
function drawIndex(random: Random, cumulative: readonly number[]): number {
  const total = cumulative[cumulative.length - 1] ?? 0;
  const target = random() * total;
  let low = 0;
  let high = cumulative.length - 1;
  while (low < high) {
    const mid = (low + high) >> 1;
    if ((cumulative[mid] ?? 0) > target) high = mid;
    else low = mid + 1;
  }
  return low;
}

function runningSum(weights: readonly number[]): number[] {
  let sum = 0;
  return weights.map((weight) => (sum += weight));
}

function makeMovies(count: number, random: Random): Movie[] {
  const genreCumulative = runningSum(GENRE_WEIGHTS);
  const movies: Movie[] = [];
  for (let id = 1; id <= count; id += 1) {
    // About 1% of MovieLens movies list no genre; keep a few such rows.
    const genreCount = random() < 0.01 ? 0 : intBetween(random, 1, 3);
    const genres = new Set<number>();
    while (genres.size < genreCount) genres.add(drawIndex(random, genreCumulative));
    movies.push({ id, genres: [...genres].sort((a, b) => a - b), quality: 0.6 * normal(random) });
  }
  return movies;
}

/**
 * Zipf-like popularity (weight 1 / (rank + 3)) over an order that only loosely follows quality,
 * so "most rated" and "best rated" overlap without being the same list.
 */
function popularityWeights(movies: readonly Movie[], random: Random): number[] {
  const order = movies
    .map((movie, index) => ({ index, key: 0.5 * movie.quality + normal(random) }))
    .sort((a, b) => b.key - a.key);
  const weights = new Array<number>(movies.length).fill(0);
  for (const [rank, entry] of order.entries()) weights[entry.index] = 1 / (rank + 3);
  return weights;
}

async function writeMovies(file: string, movies: readonly Movie[], random: Random): Promise<void> {
  const out = fs.createWriteStream(file);
  await write(out, 'movieId,title,genres\n');
  for (const movie of movies) {
    const genres = movie.genres.map((g) => MOVIELENS_GENRES[g] ?? '').join('|');
    const row = `${movie.id},${csvField(title(random))},${genres || '(no genres listed)'}\n`;
    await write(out, row);
  }
  out.end();
  await finished(out);
}

/** A made-up title with a year; one in four is "Noun, The (year)", which needs CSV quoting. */
function title(random: Random): string {
  const adjective = TITLE_WORDS.adjectives[Math.floor(random() * TITLE_WORDS.adjectives.length)];
  const noun = TITLE_WORDS.nouns[Math.floor(random() * TITLE_WORDS.nouns.length)];
  const year = intBetween(random, 1950, 2018);
  if (random() < 0.25) return `${adjective} ${noun}, The (${year})`;
  return `The ${adjective} ${noun} (${year})`;
}

function csvField(value: string): string {
  return /[",\n\r]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

async function writeRatings(
  file: string,
  movies: readonly Movie[],
  settings: Settings,
  random: Random,
): Promise<number> {
  const popularity = runningSum(popularityWeights(movies, random));
  const out = fs.createWriteStream(file);
  await write(out, 'userId,movieId,rating,timestamp\n');
  let written = 0;
  for (let id = 1; id <= settings.users; id += 1) {
    const user = makeUser(id, settings, random);
    const rows = userRatings(user, movies, popularity, settings, random);
    written += rows.length;
    await write(out, rows.join(''));
  }
  out.end();
  await finished(out);
  return written;
}

function makeUser(id: number, settings: Settings, random: Random): User {
  // Mild tastes everywhere, plus two loved genres and one disliked one.
  const taste = MOVIELENS_GENRES.map(() => 0.25 * normal(random));
  for (const [shift, times] of [
    [0.9, 2],
    [-0.9, 1],
  ] as const) {
    for (let i = 0; i < times; i += 1) {
      const genre = Math.floor(random() * taste.length);
      taste[genre] = (taste[genre] ?? 0) + shift;
    }
  }
  // Each user is active for a sub-interval of start..end.
  const start = settings.start.getTime() / 1000;
  const total = settings.end.getTime() / 1000 - start;
  const span = total * (0.15 + 0.5 * random());
  const from = start + random() * (total - span);
  return { id, bias: 0.35 * normal(random), taste, from, to: from + span };
}

/** How much the user likes the movie's genres (mean taste over them; 0 without genres). */
function affinity(user: User, movie: Movie): number {
  if (movie.genres.length === 0) return 0;
  let sum = 0;
  for (const genre of movie.genres) sum += user.taste[genre] ?? 0;
  return sum / movie.genres.length;
}

/** The user's ratings as CSV rows, ordered by movie id like the MovieLens files. */
function userRatings(
  user: User,
  movies: readonly Movie[],
  popularity: readonly number[],
  settings: Settings,
  random: Random,
): string[] {
  const [min, max] = settings.ratingsPerUser;
  const wanted = Math.min(intBetween(random, min, max), Math.floor(movies.length / 2));
  const chosen = chooseMovies(user, movies, popularity, wanted, random);
  return chosen
    .sort((a, b) => a.id - b.id)
    .map((movie) => {
      const ts = Math.floor(user.from + random() * (user.to - user.from));
      return `${user.id},${movie.id},${rate(user, movie, random).toFixed(1)},${ts}\n`;
    });
}

/**
 * Distinct movies drawn by popularity; a draw is kept more often when the user likes its genres,
 * as people mostly watch what they expect to enjoy. At most half the catalogue is wanted, so
 * repeats are rare enough for rejection; the attempt cap only guards against a pathological seed.
 */
function chooseMovies(
  user: User,
  movies: readonly Movie[],
  popularity: readonly number[],
  wanted: number,
  random: Random,
): Movie[] {
  const chosen = new Map<number, Movie>();
  for (let attempt = 0; chosen.size < wanted && attempt < wanted * 200; attempt += 1) {
    const movie = movies[drawIndex(random, popularity)];
    if (movie === undefined || chosen.has(movie.id)) continue;
    const keep = 0.35 + 0.65 / (1 + Math.exp(-3 * affinity(user, movie)));
    if (random() < keep) chosen.set(movie.id, movie);
  }
  return [...chosen.values()];
}

/** 3.4 + quality + taste + bias + noise, rounded to a half star within 0.5..5. */
function rate(user: User, movie: Movie, random: Random): number {
  const raw = 3.4 + movie.quality + affinity(user, movie) + user.bias + 0.5 * normal(random);
  return Math.min(5, Math.max(0.5, Math.round(raw * 2) / 2));
}

/** Writes and waits for the stream to drain when its buffer is full. */
async function write(out: fs.WriteStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}
