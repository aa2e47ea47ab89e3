/**
 * A seeded generator of Segment messages shaped like the traffic identity resolution meets: users
 * who browse anonymously on several browsers and app installs over weeks and then log in, emails
 * written in varying case and whitespace, family tablets and household emails shared by two users
 * (the user_id limit keeps them apart), in-store kiosks used by many, anonymous visitors who never
 * log in, alias calls, and junk values ("null", "0", all-zero UUIDs, "guest"...) riding along.
 *
 * A **link** is what one message asserts about identity: a message whose distinct, normalized,
 * non-junk identifiers (as `identifierExtractor` reads them from the stored event) number k gives
 * k - 1 links, the edges from its first (highest-priority) identifier to each other one. A message
 * with one identifier gives none, and repeated messages give their links again. Counts are exact:
 * every generated message goes through the same extractor the resolution uses.
 *
 * The generator keeps its world (users, visitors, kiosks), so an increment generated after the
 * base stream touches persons the base created, as the next minute of real traffic would.
 */
import { mulberry32 } from '../common/random.js';
import {
  identifierExtractor,
  identifierKey,
  type Identifier,
  type IdentityEventRow,
} from '../domain/identity/identifiers.js';
import { DEFAULT_RULES, message, type Message } from '../test/identity-support.js';

const DAY_MS = 86_400_000;
const EPOCH = Date.parse('2024-01-01T00:00:00Z');

/** The base stream spans this many days; an increment follows in the next day. */
export const BASE_DAYS = 90;

/** Values real SDKs and buggy integrations send as ids, each junk to the extractor. */
const JUNK = [
  'null',
  'NULL',
  '0',
  '-1',
  'undefined',
  ' guest ',
  'Guest',
  'anonymous',
  'none',
  '[object Object]',
  '00000000-0000-0000-0000-000000000000',
  '{00000000-0000-0000-0000-000000000000}',
];

const DOMAINS = ['example.com', 'mail.example.org', 'example.net'];

interface Browser {
  anonymousId: string;
  /** App installs report a device id; web browsers do not. */
  deviceId?: string;
}

interface User {
  userId: string;
  email?: string;
  devices: string[];
  browsers: Browser[];
}

type Fields = Omit<Parameters<typeof message>[0], 'id' | 'at'>;

/** One generated message with the time it happened (ms since the epoch) and its links. */
export interface TimedMessage {
  t: number;
  message: Message;
  identifiers: Identifier[];
}

/** A stream of messages in event-time order, with exact counts. */
export interface GeneratedStream {
  messages: TimedMessage[];
  events: number;
  links: number;
  /** Messages with junk values that the extractor rejected. */
  junkMessages: number;
}

const extract = identifierExtractor(DEFAULT_RULES);

/** The event row the import stores for a generated message, as resolution reads it back. */
export function storedRow(m: Message, id = 0): IdentityEventRow {
  const text = (v: unknown) => (typeof v === 'string' ? v : null);
  return {
    id,
    messageId: m.messageId,
    ts: new Date(m.timestamp),
    userId: text(m['userId']),
    anonymousId: text(m['anonymousId']),
    previousId: text(m['previousId']),
    traits: (m['traits'] as Record<string, unknown> | undefined) ?? null,
    context: (m['context'] as Record<string, unknown> | undefined) ?? null,
    properties: {},
  };
}

/** `type:value` of an identifier, the node name shared with networkx. */
export function nodeName(identifier: Identifier): string {
  return `${identifier.type}:${identifier.value}`;
}

/** The seeded world and the streams drawn from it; see the module comment. */
export class IdentityWorld {
  private readonly random: () => number;
  private readonly users: User[] = [];
  private readonly visitors: Browser[] = [];
  private readonly kiosks: string[] = [];
  private out: TimedMessage[] = [];
  private messages = 0;
  private ids = 0;
  private links = 0;
  private junk = 0;

  constructor(private readonly seed: number) {
    this.random = mulberry32(seed);
  }

  /** Users and visitors over BASE_DAYS until the messages carry at least `links` links. */
  base(links: number): GeneratedStream {
    return this.stream(links, () => {
      const start = this.between(0, (BASE_DAYS - 3) * DAY_MS);
      const end = Math.min(BASE_DAYS * DAY_MS, start + this.between(DAY_MS, 45 * DAY_MS));
      if (this.random() < 0.3) this.visitor(start, end);
      else this.user(start, end);
    });
  }

  /**
   * The next day's traffic, until it carries at least `links` links: returning users on new
   * browsers and devices, visitors who sign up, a user logging in on a visitor's browser (two
   * stored persons merge), and new users and visitors.
   */
  increment(links: number): GeneratedStream {
    const from = BASE_DAYS * DAY_MS;
    const to = from + DAY_MS;
    return this.stream(links, () => {
      const roll = this.random();
      if (roll < 0.35) this.returningOnNewBrowser(from, to);
      else if (roll < 0.55) this.returningOnKnownBrowser(from, to);
      else if (roll < 0.7) this.visitorSignsUp(from, to);
      else if (roll < 0.75) this.userOnVisitorBrowser(from, to);
      else if (roll < 0.9) this.user(from, to);
      else this.visitor(from, to);
    });
  }

  private stream(links: number, actor: () => void): GeneratedStream {
    this.out = [];
    this.links = 0;
    this.junk = 0;
    while (this.links < links) actor();
    const messages = this.out.sort((a, b) => a.t - b.t);
    return { messages, events: messages.length, links: this.links, junkMessages: this.junk };
  }

  /** A user: browses anonymously, logs in on each browser, and keeps using them while logged in. */
  private user(start: number, end: number): void {
    const h = this.users.length;
    const user: User = {
      userId: this.random() < 0.2 ? String(1_000_000 + h) : `user-${this.seed}-${h}`,
      devices: Array.from({ length: 1 + this.count(0.35, 2) }, () => this.id('dev')),
      browsers: [],
      ...(this.random() < 0.75 ? { email: this.email(h) } : {}),
    };
    this.users.push(user);
    const browsers = 1 + this.count(0.55, 7);
    for (let b = 0; b < browsers; b += 1) {
      const first = this.between(start, end);
      const browser = this.browser(user, first);
      this.page(browser, first - this.between(60_000, 3 * DAY_MS), this.between(0, 3));
      this.sessions(user, browser, first, end);
    }
    if (this.random() < 0.2 && user.browsers[0]) {
      const previousId = user.browsers[0].anonymousId;
      this.emit(start + 1000, { type: 'alias', userId: user.userId, previousId });
    }
    this.household(user, start, end);
  }

  /** A new browser of the user: an app install (with a device id) or a web browser. */
  private browser(user: User, at: number): Browser {
    const app = user.devices.length > 0 && this.random() < 0.5;
    const browser: Browser = {
      anonymousId: this.id('anon'),
      ...(app ? { deviceId: this.pick(user.devices) } : {}),
    };
    user.browsers.push(browser);
    const email = user.email && this.random() < 0.7 ? { email: this.variant(user.email) } : {};
    this.emit(at, { type: 'identify', userId: user.userId, ...this.on(browser), ...email });
    return browser;
  }

  /** Logged-in sessions on one browser between `from` and `to`. */
  private sessions(user: User, browser: Browser, from: number, to: number): void {
    const sessions = 1 + this.count(0.5, 5);
    for (let s = 0; s < sessions; s += 1) {
      const at = this.between(from, to);
      const events = 1 + this.count(0.6, 6);
      for (let e = 0; e < events; e += 1) {
        const contextEmail =
          user.email && this.random() < 0.1 ? { contextEmail: this.variant(user.email) } : {};
        this.emit(at + e * 30_000, { userId: user.userId, ...this.on(browser), ...contextEmail });
      }
    }
  }

  /** Anonymous page views on a browser, before its owner logs in (or for ever, for visitors). */
  private page(browser: Browser, at: number, views: number): void {
    for (let v = 0; v < views; v += 1) {
      this.emit(at + v * 45_000, { type: 'page', ...this.on(browser) });
    }
  }

  /** Shared family tablets and household emails (3% / 1% of users); kiosks (1%). */
  private household(user: User, start: number, end: number): void {
    const partner = this.users[Math.floor(this.random() * (this.users.length - 1))];
    if (partner && partner !== user && this.random() < 0.03) {
      const tablet = partner.browsers.find((b) => b.deviceId) ?? partner.browsers[0];
      if (tablet) this.sessions(user, tablet, start, end);
    }
    if (partner?.email && partner !== user && this.random() < 0.01) {
      const email = this.variant(partner.email);
      this.emit(this.between(start, end), { type: 'identify', userId: user.userId, email });
    }
    if (this.random() < 0.01) {
      if (this.kiosks.length === 0 || this.random() < 0.05) this.kiosks.push(this.id('kiosk'));
      const kiosk = { anonymousId: this.id('anon'), deviceId: this.pick(this.kiosks) };
      this.sessions(user, kiosk, start, end);
    }
  }

  /** A visitor who never logs in: one or two browsers, a few page views and tracks. */
  private visitor(start: number, end: number): void {
    const browsers = 1 + this.count(0.15, 1);
    for (let b = 0; b < browsers; b += 1) {
      const app = this.random() < 0.3;
      const browser: Browser = {
        anonymousId: this.id('anon'),
        ...(app ? { deviceId: this.id('dev') } : {}),
      };
      this.visitors.push(browser);
      const at = this.between(start, end);
      this.page(browser, at, 1 + this.count(0.5, 4));
      if (this.random() < 0.5) this.emit(at + 600_000, this.on(browser));
    }
  }

  private returningOnNewBrowser(from: number, to: number): void {
    const user = this.pick(this.users);
    const at = this.between(from, to);
    this.page({ anonymousId: this.id('anon') }, at - 60_000, this.count(0.5, 2));
    this.sessions(user, this.browser(user, at), at, to);
  }

  private returningOnKnownBrowser(from: number, to: number): void {
    const user = this.pick(this.users);
    const browser = this.pick(user.browsers);
    this.sessions(user, browser, from, to);
  }

  private visitorSignsUp(from: number, to: number): void {
    const visitor = this.visitors.pop();
    if (!visitor) return;
    const h = this.users.length;
    const user: User = { userId: `user-${this.seed}-${h}`, devices: [], browsers: [visitor] };
    user.email = this.email(h);
    this.users.push(user);
    const at = this.between(from, to);
    this.emit(at, {
      type: 'identify',
      userId: user.userId,
      ...this.on(visitor),
      email: user.email,
    });
    this.sessions(user, visitor, at, to);
  }

  /** A user logs in on a browser a visitor used: the visitor's person merges into the user's. */
  private userOnVisitorBrowser(from: number, to: number): void {
    const visitor = this.visitors.pop();
    const user = this.pick(this.users);
    if (!visitor) return;
    user.browsers.push(visitor);
    this.sessions(user, visitor, from, to);
  }

  private emit(t: number, fields: Fields): void {
    const junked = this.junked(fields);
    this.messages += 1;
    const m = message({
      id: `idb${this.seed}-${this.messages}`,
      at: new Date(EPOCH + Math.round(t)).toISOString(),
      ...junked,
    });
    const { identifiers, rejected } = extract(storedRow(m));
    if (rejected > 0) this.junk += 1;
    this.links += Math.max(0, identifiers.length - 1);
    this.out.push({ t, message: m, identifiers });
  }

  /** About 3% of anonymous ids and 2% of device ids are replaced by junk, as SDK bugs do. */
  private junked(fields: Fields): Fields {
    const out = { ...fields };
    if (out.anonymousId !== undefined && this.random() < 0.03) out.anonymousId = this.pick(JUNK);
    if (out.deviceId !== undefined && this.random() < 0.02) out.deviceId = this.pick(JUNK);
    // A message needs a userId or an anonymousId: the import refuses one with neither.
    if (out.type === 'alias' && this.random() < 0.02) out.previousId = this.pick(JUNK);
    return out;
  }

  private on(browser: Browser): Fields {
    return {
      anonymousId: browser.anonymousId,
      ...(browser.deviceId ? { deviceId: browser.deviceId } : {}),
    };
  }

  private email(h: number): string {
    return `first${h}.last${this.seed}@${this.pick(DOMAINS)}`;
  }

  /** The address as people and forms write it: varying case, stray spaces. */
  private variant(email: string): string {
    const roll = this.random();
    if (roll < 0.5) return email;
    if (roll < 0.7) return email.toUpperCase();
    if (roll < 0.85) return `  ${email} `;
    return email.charAt(0).toUpperCase() + email.slice(1);
  }

  /** A random-looking unique id: a UUID-shaped string for anonymous ids, like the SDKs send. */
  private id(prefix: string): string {
    this.ids += 1;
    const hex = Math.floor(this.random() * 0xffffffff)
      .toString(16)
      .padStart(8, '0');
    return `${prefix}-${hex}-${this.seed}-${this.ids.toString(36)}`;
  }

  private between(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }

  /** Successes before the first failure at probability p, capped: a geometric count. */
  private count(p: number, cap: number): number {
    let n = 0;
    while (n < cap && this.random() < p) n += 1;
    return n;
  }

  private pick<T>(items: readonly T[]): T {
    const item = items[Math.floor(this.random() * items.length)];
    if (item === undefined) throw new Error('identity generator: pick from an empty list');
    return item;
  }
}

/** The distinct identifier nodes and the link edges of a stream, as networkx reads them. */
export function edgeLines(stream: GeneratedStream): string[] {
  const lines: string[] = [];
  for (const { identifiers } of stream.messages) {
    const [first, ...rest] = identifiers.map(nodeName);
    if (first === undefined) continue;
    if (rest.length === 0) lines.push(first);
    for (const other of rest) lines.push(`${first}\t${other}`);
  }
  return lines;
}

/** Distinct identifiers of a stream (for the totals table). */
export function distinctIdentifiers(stream: GeneratedStream): number {
  const keys = new Set<string>();
  for (const { identifiers } of stream.messages) {
    for (const identifier of identifiers) keys.add(identifierKey(identifier));
  }
  return keys.size;
}
