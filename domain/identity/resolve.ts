/**
 * Resolution of one chunk of events, in memory and without I/O: union-find over persons, seeded
 * with the part of the stored graph the chunk touches, applying each message in event-time order.
 *
 * One message links all of its identifiers, greedily in priority order: the highest-priority
 * identifier's person is the start, and each next identifier's person (or the new identifier) joins
 * unless the union would hold more distinct values of some type than that type's limit allows
 * (counting values first seen within the type's window before the message). An identifier that
 * would breach is dropped from this message's merge and recorded as a conflict; it stays with its
 * person, or founds a person of its own when it is new. The event is attributed to the merged
 * person.
 *
 * Survivor: when persons merge, the one first seen earliest (event time of its earliest event)
 * survives, ties to the lowest id; the others point at it. A canonical id therefore changes only
 * when its person is merged into an older one, never because of arrival order within a chunk.
 *
 * Anchors, for unmerge: a person row is a node of provenance. The message's highest-priority known
 * identifier names its anchor node; the event is attributed to that node and its new identifiers
 * join it. Each merge records the node of the merged part and the node of the surviving part that
 * the message linked (`fromNode`, `intoNode`): those links form a spanning tree of each person, so
 * undoing one cuts it into exactly the two sides it joined (domain/identity/unmerge.ts). A person
 * split by an unmerge carries a separation; a message that would join the two sides again breaches
 * it like a limit.
 *
 * Messages are applied in (timestamp, messageId) order, so how they arrived within a chunk does not
 * matter. Across chunks, arrival order can matter when two merges compete for one limit (the first
 * applied wins); without limits the result is the connected components, whatever the order.
 */
import { type Identifier, identifierKey } from './identifiers.js';
import { type IdentityRules, type LimitRule, ruleOf, typesOf } from './rules.js';

const DAY_MS = 86_400_000;

/** An event ready for resolution: its identifiers extracted, highest priority first. */
export interface ChunkEvent {
  id: number;
  messageId: string;
  ts: Date;
  identifiers: Identifier[];
}

/** The part of the stored graph a chunk touches. */
export interface GraphSlice {
  /** The canonical persons holding any identifier of the chunk. */
  persons: Array<{ id: number; firstSeenAt: Date }>;
  /**
   * The chunk's stored identifiers and every limited-type identifier of those persons, each with
   * the person it joined (its node) and that person's canonical person.
   */
  identifiers: Array<Identifier & { personId: number; canonicalId: number; firstSeenAt: Date }>;
  /** The id the next new person gets (ids are assigned in creation order). */
  nextPersonId: number;
  /** Active unmerges touching these persons: which side of which unmerge each one holds. */
  separations?: Array<{ personId: number; unmergeId: number; side: SeparationSide }>;
}

/** The two sides of an unmerge: the merged side (`from`) and the surviving side (`into`). */
export type SeparationSide = 'from' | 'into';

export interface PersonRow {
  id: number;
  canonicalId: number;
  mergedInto: number | null;
  firstSeenAt: Date;
  firstEventId: number;
}

export interface MergeRecord {
  mergedFrom: number;
  mergedInto: number;
  /** The persons (nodes) in each side whose identifiers the message linked. */
  fromNode: number;
  intoNode: number;
  eventId: number;
  messageId: string;
  decisions: MergeDecisions;
}

export interface MergeDecisions {
  survivorRule: 'earliest first_seen_at, then lowest id';
  mergedFromFirstSeenAt: string;
  mergedIntoFirstSeenAt: string;
  /** Types of the message's identifiers that linked, and of those a limit dropped. */
  kept: string[];
  dropped: string[];
  /** Distinct values per limited type that the merged person holds within its window, after. */
  counts: Record<string, number>;
}

/** Why an identifier was kept out of a merge: a limit, or an unmerge that keeps two sides apart. */
export type Breach =
  | { kind: 'limit'; type: string; maxValues: number; windowDays: number | null; wouldHold: number }
  | { kind: 'unmerged'; unmergeId: number };

export interface ConflictRecord extends Identifier {
  eventId: number;
  messageId: string;
  identifierPersonId: number;
  attributedPersonId: number;
  reason: string;
  breaches: Breach[];
}

export interface ResolutionStats {
  events: number;
  attributed: number;
  identifiersAdded: number;
  personsCreated: number;
  merges: number;
  conflicts: number;
}

/** What the chunk changes, ready to write. */
export interface Resolution {
  newPersons: PersonRow[];
  /** Stored persons that were merged or whose first_seen_at moved earlier. */
  changedPersons: Array<Omit<PersonRow, 'firstEventId'>>;
  newIdentifiers: Array<Identifier & { personId: number; firstSeenAt: Date; firstEventId: number }>;
  /** Stored identifiers seen in an event older than their first_seen_at. */
  earlierIdentifiers: Array<Identifier & { firstSeenAt: Date }>;
  attributions: Array<{ eventId: number; personId: number }>;
  merges: MergeRecord[];
  conflicts: ConflictRecord[];
  stats: ResolutionStats;
}

interface Person {
  id: number;
  stored: boolean;
  firstSeenAt: number;
  firstSeenMoved: boolean;
  firstEventId: number;
  parent: Person | null;
  mergedInto: Person | null;
  /** Roots only: limited type -> identifier key -> first seen (ms). */
  members: Map<string, Map<string, number>>;
  /** Roots only: active unmerge id -> the side of it this person holds. */
  separations: Map<number, SeparationSide>;
}

interface Known extends Identifier {
  key: string;
  person: Person;
  firstSeenAt: number;
  stored: boolean;
  moved: boolean;
  firstEventId: number;
}

/**
 * One side of a prospective union: a person (its root, and the node of the identifier that brought
 * it in), or an identifier that has none yet.
 */
type Part = { person: Person; node: Person } | { fresh: Identifier };

/** Resolves a chunk against the graph slice; see the module comment for the rules. */
export function resolveChunk(
  events: readonly ChunkEvent[],
  slice: GraphSlice,
  rules: IdentityRules,
): Resolution {
  return new Resolver(slice, rules).run(events);
}

class Resolver {
  private readonly persons = new Map<number, Person>();
  private readonly known = new Map<string, Known>();
  private readonly limited = new Map<string, LimitRule & { maxValues: number }>();
  private nextId: number;
  private readonly out: Resolution = {
    newPersons: [],
    changedPersons: [],
    newIdentifiers: [],
    earlierIdentifiers: [],
    attributions: [],
    merges: [],
    conflicts: [],
    stats: {
      events: 0,
      attributed: 0,
      identifiersAdded: 0,
      personsCreated: 0,
      merges: 0,
      conflicts: 0,
    },
  };

  constructor(slice: GraphSlice, rules: IdentityRules) {
    this.nextId = slice.nextPersonId;
    for (const type of typesOf(rules)) {
      const rule = ruleOf(rules, type);
      if (rule?.maxValues) this.limited.set(type, { ...rule, maxValues: rule.maxValues });
    }
    for (const row of slice.persons) {
      this.persons.set(row.id, this.person(row.id, true, row.firstSeenAt.getTime(), 0));
    }
    for (const { personId, unmergeId, side } of slice.separations ?? []) {
      this.persons.get(personId)?.separations.set(unmergeId, side);
    }
    for (const row of slice.identifiers) {
      const root = this.persons.get(row.canonicalId);
      if (!root) throw new Error(`graph slice: identifier of unknown person ${row.canonicalId}`);
      const key = identifierKey(row);
      if (this.known.has(key)) continue;
      const person = this.storedNode(row.personId, root);
      const firstSeenAt = row.firstSeenAt.getTime();
      const known = { type: row.type, value: row.value, key, person, firstSeenAt };
      this.known.set(key, { ...known, stored: true, moved: false, firstEventId: 0 });
      if (this.limited.has(row.type)) this.memberOf(root, row.type).set(key, firstSeenAt);
    }
  }

  run(events: readonly ChunkEvent[]): Resolution {
    const ordered = [...events].sort(
      (a, b) =>
        a.ts.getTime() - b.ts.getTime() ||
        (a.messageId < b.messageId ? -1 : a.messageId > b.messageId ? 1 : 0),
    );
    for (const event of ordered) this.apply(event);
    this.collect();
    return this.out;
  }

  private apply(event: ChunkEvent): void {
    this.out.stats.events += 1;
    if (event.identifiers.length === 0) return;
    const t = event.ts.getTime();
    const parts: Part[] = [];
    const kept: Identifier[] = [];
    const dropped: Array<{ identifier: Identifier; breaches: Breach[] }> = [];

    for (const identifier of event.identifiers) {
      const known = this.known.get(identifierKey(identifier));
      const part: Part = known
        ? { person: this.find(known.person), node: known.person }
        : { fresh: identifier };
      const joined =
        'person' in part && parts.some((p) => 'person' in p && p.person === part.person);
      const breaches = parts.length === 0 || joined ? [] : this.breaches(parts, part, t);
      if (breaches.length > 0) {
        dropped.push({ identifier, breaches });
        continue;
      }
      if (!joined) parts.push(part);
      kept.push(identifier);
    }

    const { survivor, anchor } = this.link(event, parts, kept, dropped);
    for (const identifier of kept) this.seen(identifier, t);
    if (t < survivor.firstSeenAt) this.moveFirstSeen(survivor, t);
    this.out.attributions.push({ eventId: event.id, personId: anchor.id });
    this.out.stats.attributed += 1;
    for (const { identifier, breaches } of dropped) {
      this.conflict(event, identifier, breaches, anchor);
    }
  }

  /**
   * Merges the message's persons and new identifiers into one person. Returns that person (the
   * root) and the anchor: the node of the first known identifier, where new identifiers go.
   */
  private link(
    event: ChunkEvent,
    parts: readonly Part[],
    kept: readonly Identifier[],
    dropped: ReadonlyArray<{ identifier: Identifier }>,
  ): { survivor: Person; anchor: Person } {
    const t = event.ts.getTime();
    const linked = parts.flatMap((p) => ('person' in p ? [p] : []));
    const first = linked.reduce<(typeof linked)[number] | undefined>(
      (a, b) => (a && !older(b.person, a.person) ? a : b),
      undefined,
    );
    const survivor = first?.person ?? this.create(t, event.id);
    const anchor = linked[0]?.node ?? survivor;
    const merged = linked.filter((p) => p.person !== survivor);
    for (const p of merged) this.union(p.person, survivor);
    for (const p of parts) if ('fresh' in p) this.add(p.fresh, anchor, survivor, t, event.id);

    const counts = this.counts(survivor, t);
    for (const { person: p, node } of merged) {
      this.out.merges.push({
        mergedFrom: p.id,
        mergedInto: survivor.id,
        fromNode: node.id,
        intoNode: first?.node.id ?? survivor.id,
        eventId: event.id,
        messageId: event.messageId,
        decisions: {
          survivorRule: 'earliest first_seen_at, then lowest id',
          mergedFromFirstSeenAt: new Date(p.firstSeenAt).toISOString(),
          mergedIntoFirstSeenAt: new Date(survivor.firstSeenAt).toISOString(),
          kept: kept.map((k) => k.type),
          dropped: dropped.map((d) => d.identifier.type),
          counts,
        },
      });
    }
    return { survivor, anchor };
  }

  /** Records a dropped identifier; a new one founds a person of its own. */
  private conflict(
    event: ChunkEvent,
    identifier: Identifier,
    breaches: Breach[],
    attributed: Person,
  ): void {
    const t = event.ts.getTime();
    const known = this.known.get(identifierKey(identifier));
    let holder: Person;
    if (known) {
      this.seen(identifier, t);
      holder = known.person;
    } else {
      holder = this.create(t, event.id);
      this.add(identifier, holder, holder, t, event.id);
    }
    const [first] = breaches;
    this.out.conflicts.push({
      ...identifier,
      eventId: event.id,
      messageId: event.messageId,
      identifierPersonId: holder.id,
      attributedPersonId: attributed.id,
      reason: first ? describeBreach(first) : 'limit exceeded',
      breaches,
    });
  }

  /** The limits and separations that the union of `parts` with `part` would breach at time t. */
  private breaches(parts: readonly Part[], part: Part, t: number): Breach[] {
    const found: Breach[] = [];
    if ('person' in part) {
      for (const [unmergeId, side] of part.person.separations) {
        const apart = parts.some(
          (p) => 'person' in p && p.person.separations.get(unmergeId) === opposite(side),
        );
        if (apart) found.push({ kind: 'unmerged', unmergeId });
      }
    }
    for (const [type, rule] of this.limited) {
      const adding = this.count(part, type, rule, t);
      if (adding === 0) continue;
      const holding = parts.reduce((sum, p) => sum + this.count(p, type, rule, t), 0);
      if (holding > 0 && holding + adding > rule.maxValues) {
        found.push({
          kind: 'limit',
          type,
          maxValues: rule.maxValues,
          windowDays: rule.windowDays,
          wouldHold: holding + adding,
        });
      }
    }
    return found;
  }

  private count(part: Part, type: string, rule: LimitRule, t: number): number {
    if ('fresh' in part) return part.fresh.type === type ? 1 : 0;
    const values = part.person.members.get(type);
    if (!values) return 0;
    if (rule.windowDays === null) return values.size;
    const since = t - rule.windowDays * DAY_MS;
    let n = 0;
    for (const firstSeen of values.values()) if (firstSeen > since) n += 1;
    return n;
  }

  private counts(person: Person, t: number): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const [type, rule] of this.limited) {
      counts[type] = this.count({ person, node: person }, type, rule, t);
    }
    return counts;
  }

  private person(id: number, stored: boolean, firstSeenAt: number, firstEventId: number): Person {
    return {
      id,
      stored,
      firstSeenAt,
      firstSeenMoved: false,
      firstEventId,
      parent: null,
      mergedInto: null,
      members: new Map(),
      separations: new Map(),
    };
  }

  /** A stored person that is (or is merged into) `root`, as a node of it. */
  private storedNode(id: number, root: Person): Person {
    if (id === root.id) return root;
    let node = this.persons.get(id);
    if (!node) {
      node = this.person(id, true, root.firstSeenAt, 0);
      node.parent = root;
      this.persons.set(id, node);
    }
    return node;
  }

  private create(t: number, eventId: number): Person {
    const person = this.person(this.nextId, false, t, eventId);
    this.nextId += 1;
    this.persons.set(person.id, person);
    this.out.stats.personsCreated += 1;
    return person;
  }

  /** A new identifier joins `node`, a person of the component whose root is `root`. */
  private add(identifier: Identifier, node: Person, root: Person, t: number, eventId: number) {
    const key = identifierKey(identifier);
    this.known.set(key, {
      ...identifier,
      key,
      person: node,
      firstSeenAt: t,
      stored: false,
      moved: false,
      firstEventId: eventId,
    });
    if (this.limited.has(identifier.type)) this.memberOf(root, identifier.type).set(key, t);
    this.out.stats.identifiersAdded += 1;
  }

  /** An identifier seen at t: its first_seen_at moves earlier if t is older. */
  private seen(identifier: Identifier, t: number): void {
    const known = this.known.get(identifierKey(identifier));
    if (!known || t >= known.firstSeenAt) return;
    known.firstSeenAt = t;
    known.moved = known.stored;
    this.find(known.person).members.get(known.type)?.set(known.key, t);
  }

  private moveFirstSeen(person: Person, t: number): void {
    person.firstSeenAt = t;
    person.firstSeenMoved = person.stored;
  }

  private memberOf(root: Person, type: string): Map<string, number> {
    let values = root.members.get(type);
    if (!values) {
      values = new Map();
      root.members.set(type, values);
    }
    return values;
  }

  private find(person: Person): Person {
    let root = person;
    while (root.parent) root = root.parent;
    let current = person;
    while (current.parent && current.parent !== root) {
      const next: Person = current.parent;
      current.parent = root;
      current = next;
    }
    return root;
  }

  /** Merges root `from` into root `into`, moving its members (the smaller map into the larger). */
  private union(from: Person, into: Person): void {
    from.parent = into;
    from.mergedInto = into;
    for (const [type, values] of from.members) {
      const target = into.members.get(type);
      if (!target) {
        into.members.set(type, values);
        continue;
      }
      const [small, large] = values.size < target.size ? [values, target] : [target, values];
      for (const [key, firstSeen] of small) large.set(key, firstSeen);
      into.members.set(type, large);
    }
    from.members = new Map();
    for (const [unmergeId, side] of from.separations) into.separations.set(unmergeId, side);
    from.separations = new Map();
    this.out.stats.merges += 1;
  }

  private collect(): void {
    for (const person of this.persons.values()) {
      const row = {
        id: person.id,
        canonicalId: this.find(person).id,
        mergedInto: person.mergedInto?.id ?? null,
        firstSeenAt: new Date(person.firstSeenAt),
      };
      if (!person.stored) {
        this.out.newPersons.push({ ...row, firstEventId: person.firstEventId });
      } else if (person.mergedInto || person.firstSeenMoved) {
        this.out.changedPersons.push(row);
      }
    }
    for (const known of this.known.values()) {
      const { type, value } = known;
      const firstSeenAt = new Date(known.firstSeenAt);
      if (!known.stored) {
        const personId = known.person.id;
        this.out.newIdentifiers.push({
          type,
          value,
          personId,
          firstSeenAt,
          firstEventId: known.firstEventId,
        });
      } else if (known.moved) {
        this.out.earlierIdentifiers.push({ type, value, firstSeenAt });
      }
    }
    this.out.stats.conflicts = this.out.conflicts.length;
  }
}

function opposite(side: SeparationSide): SeparationSide {
  return side === 'from' ? 'into' : 'from';
}

/** A conflict's reason, in words. */
function describeBreach(breach: Breach): string {
  if (breach.kind === 'unmerged') {
    return `would join the two persons that unmerge ${breach.unmergeId} separated`;
  }
  const per = breach.windowDays === null ? '' : ` per ${breach.windowDays} days`;
  const held = `${breach.wouldHold} values`;
  return `${breach.type} limit of ${breach.maxValues}${per} would be exceeded (${held})`;
}

/** True when `a` should survive a merge with `b`: first seen earlier, ties to the lower id. */
function older(a: Person, b: Person): boolean {
  return a.firstSeenAt < b.firstSeenAt || (a.firstSeenAt === b.firstSeenAt && a.id < b.id);
}
