/**
 * A playbook definition: name, version, description, typed parameters with defaults, and steps.
 * `validatePlaybook` checks a parsed document completely at load, so a run never meets a bad one:
 * the shape (zod), unknown step types, duplicate step ids, expressions that do not parse, and
 * references to parameters that are not declared or to steps that do not come earlier. Each
 * problem names the file, the step (id and index), the field and the value. Pure, for workflow
 * code (YAML files are read in file.ts).
 */
import { z } from 'zod';
import { InputError } from '../../common/failures.js';
import { plainText } from '../retrain.js';
import { durationSchema } from '../rollout/config.js';
import { checkSyntax, expressionsIn, isTemplate, references } from './expressions.js';
import { STEP_ARGS, STEP_TYPES, stepCommonShape, type StepType } from './steps.js';

/** Thrown for a playbook that cannot load; the message lists every problem with its place. */
export class PlaybookError extends InputError {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: ${problems.length} problem(s):\n  - ${problems.join('\n  - ')}`);
  }
}

export const PARAM_TYPES = ['string', 'number', 'boolean', 'list', 'duration', 'instant'] as const;
export type ParamType = (typeof PARAM_TYPES)[number];

const paramValue: Record<ParamType, z.ZodType> = {
  string: z.string().max(4000),
  number: z.number().finite(),
  boolean: z.boolean(),
  list: z.array(z.string().max(4000)).max(1000),
  duration: durationSchema,
  instant: z.iso.datetime({ offset: true }),
};

const parameterSchema = z.strictObject({
  type: z.enum(PARAM_TYPES),
  description: plainText(500).optional(),
  default: z.unknown().optional(),
});
export type Parameter = z.output<typeof parameterSchema>;

export const playbookNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'is not a playbook name: a-z, 0-9 and -, 1-63 chars');

/** The shape of a step at load: common fields, a known type, arguments that may be templates. */
const loadedStepSchema = z.looseObject({
  ...stepCommonShape,
  type: z.enum(STEP_TYPES as [StepType, ...StepType[]]),
  with: z.record(z.string(), z.unknown()).default({}),
});

export const playbookSchema = z.strictObject({
  name: playbookNameSchema,
  version: z.number().int().min(1).max(1_000_000),
  description: plainText(2000),
  parameters: z
    .record(z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, 'is not a parameter name'), parameterSchema)
    .default({}),
  steps: z.array(z.unknown()).min(1).max(100),
});

export type PlaybookStep = z.output<typeof loadedStepSchema>;
export type Playbook = Omit<z.output<typeof playbookSchema>, 'steps'> & { steps: PlaybookStep[] };

const KNOWN_STEP_KEYS = new Set([...Object.keys(stepCommonShape), 'type', 'with']);

/** A zod issue's path as a reader writes it: `with.email.subject`, `approvers[1]`. */
function pathText(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`))
    .join('');
}

function shown(value: unknown): string {
  if (value === undefined) return 'missing';
  return JSON.stringify(value)?.slice(0, 80) ?? typeof value;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let current = input;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function issues(error: z.ZodError, input: unknown, prefix: readonly PropertyKey[]): string[] {
  return error.issues.map((issue) => {
    const field = pathText([...prefix, ...issue.path]) || '(document)';
    return `${field}: ${issue.message} (got ${shown(valueAt(input, issue.path))})`;
  });
}

/** Templates stand for any value at load: arguments are checked again once resolved. */
function argsSchemaAtLoad(type: StepType): z.ZodType {
  const schema = STEP_ARGS[type] as unknown as z.ZodType;
  return z.preprocess((raw) => withPlaceholders(raw, schema), schema);
}

/**
 * What is wrong with a step's arguments once the parameters are resolved, as `with.<field>: … (got
 * …)`; templates still pending (on step outputs) stand for any value their field accepts.
 */
export function argsProblems(type: string, args: unknown): string[] {
  if (!(STEP_TYPES as readonly string[]).includes(type)) {
    return [`type: is not a step type (got "${type}")`];
  }
  const parsed = argsSchemaAtLoad(type as StepType).safeParse(args);
  return parsed.success ? [] : issues(parsed.error, args, ['with']);
}

/**
 * Replaces each template (at any depth) by a value its field accepts, found by trying a few
 * candidates against the field's own schema; what is not a template is left for zod to judge.
 */
function withPlaceholders(raw: unknown, schema: z.ZodType): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const shape = shapeOf(schema);
  return Object.fromEntries(
    Object.entries(raw).map(([key, value]) => {
      const field = shape?.[key];
      if (isTemplate(value)) return [key, placeholderFor(field)];
      if (field && value !== null && typeof value === 'object' && !Array.isArray(value)) {
        return [key, withPlaceholders(value, field)];
      }
      if (Array.isArray(value) && value.some(isTemplate)) return [key, placeholderFor(field)];
      return [key, value];
    }),
  );
}

function shapeOf(schema: z.ZodType | undefined): Record<string, z.ZodType> | undefined {
  let current: unknown = schema;
  for (let i = 0; i < 6 && current; i++) {
    const def = (current as { def?: Record<string, unknown> }).def;
    if (!def) return undefined;
    if (def['shape']) return def['shape'] as Record<string, z.ZodType>;
    current = def['innerType'] ?? def['in'] ?? def['schema'];
  }
  return undefined;
}

const CANDIDATES: unknown[] = [
  'placeholder',
  'PLACEHOLDER',
  'POPS_PLAYBOOK_PLACEHOLDER',
  'https://placeholder.invalid/',
  1,
  true,
  '1s',
  '2000-01-01T00:00:00Z',
  '2000-01-01',
  'a@1',
  ['placeholder'],
  ['a@1'],
  { placeholder: true },
];

function placeholderFor(field: z.ZodType | undefined): unknown {
  if (!field) return 'placeholder';
  const options = optionsOf(field);
  return [...options, ...CANDIDATES].find((c) => field.safeParse(c).success) ?? 'placeholder';
}

/** The values of an enum field (through optional and default), else none. */
function optionsOf(field: z.ZodType): unknown[] {
  let current: unknown = field;
  for (let i = 0; i < 4 && current; i++) {
    const options = (current as { options?: unknown }).options;
    if (Array.isArray(options)) return options;
    current = (current as { def?: { innerType?: unknown } }).def?.innerType;
  }
  return [];
}

/**
 * Validates a parsed YAML (or JSON) document as a playbook; `source` names it in errors (a file
 * path or `api`). Throws PlaybookError listing every problem found.
 */
export function validatePlaybook(doc: unknown, source: string): Playbook {
  const top = playbookSchema.safeParse(doc);
  if (!top.success) throw new PlaybookError(source, issues(top.error, doc, []));
  const problems: string[] = [];
  const params = top.data.parameters;
  for (const [name, p] of Object.entries(params)) {
    if (p.default === undefined) continue;
    const ok = paramValue[p.type].safeParse(p.default);
    if (!ok.success) {
      problems.push(`parameters.${name}.default: is not a ${p.type} (got ${shown(p.default)})`);
    }
  }
  const steps: PlaybookStep[] = [];
  const seen = new Set<string>();
  top.data.steps.forEach((raw, index) => {
    const step = checkStep(raw, index, params, seen, problems);
    if (step) steps.push(step);
    // A step that did not load still names its id, so later references to it are not reported
    // as a second problem.
    const id = step?.id ?? (raw as { id?: unknown } | null)?.id;
    if (typeof id === 'string') seen.add(id);
  });
  if (problems.length > 0) throw new PlaybookError(source, problems);
  return { ...top.data, steps };
}

function checkStep(
  raw: unknown,
  index: number,
  params: Record<string, Parameter>,
  earlier: ReadonlySet<string>,
  problems: string[],
): PlaybookStep | undefined {
  const rawId = (raw as { id?: unknown } | null)?.id;
  const place = `step ${typeof rawId === 'string' ? `"${rawId}" ` : ''}(steps[${index}])`;
  const parsed = loadedStepSchema.safeParse(raw);
  if (!parsed.success) {
    for (const p of issues(parsed.error, raw, [])) problems.push(`${place} ${p}`);
    return undefined;
  }
  const step = parsed.data;
  for (const key of Object.keys(step)) {
    if (!KNOWN_STEP_KEYS.has(key)) {
      problems.push(`${place} ${key}: is not a step field (got ${shown(step[key])})`);
    }
  }
  if (earlier.has(step.id)) {
    problems.push(`${place} id: repeats an earlier step (got "${step.id}")`);
  }
  const args = argsSchemaAtLoad(step.type).safeParse(step.with);
  if (!args.success) {
    for (const p of issues(args.error, step.with, ['with'])) problems.push(`${place} ${p}`);
  }
  if (!['freeze_rollouts', 'rollback_model', 'set_mode', 'stop_campaigns'].includes(step.type)) {
    if ((raw as Record<string, unknown>)['compensate'] === true) {
      problems.push(`${place} compensate: step type ${step.type} has no undo (got true)`);
    }
  }
  const expressions: Array<[string, string]> = [
    ...(step.when ? ([['when', step.when]] as Array<[string, string]>) : []),
    ...(step.expect ? ([['expect', step.expect]] as Array<[string, string]>) : []),
    ...Object.entries(step.with).flatMap(([key, value]) =>
      expressionsIn(value).map((e): [string, string] => [`with.${key}`, e]),
    ),
  ];
  for (const [field, expression] of expressions) {
    checkExpression(place, field, expression, step.id, params, earlier, problems);
  }
  return step;
}

function checkExpression(
  place: string,
  field: string,
  expression: string,
  self: string,
  params: Record<string, Parameter>,
  earlier: ReadonlySet<string>,
  problems: string[],
): void {
  try {
    checkSyntax(expression);
  } catch (err) {
    problems.push(
      `${place} ${field}: does not parse: ${(err as Error).message} (got ${shown(expression)})`,
    );
    return;
  }
  const refs = references(expression);
  for (const name of refs.params) {
    if (!(name in params)) {
      problems.push(
        `${place} ${field}: refers to parameter "${name}", which is not declared` +
          ` (got ${shown(expression)})`,
      );
    }
  }
  for (const id of refs.steps) {
    if (!earlier.has(id)) {
      const why = id === self ? 'itself' : `step "${id}", which is not an earlier step`;
      problems.push(`${place} ${field}: refers to ${why} (got ${shown(expression)})`);
    }
  }
}

/** Thrown for run parameters that do not fit the playbook; the message names each. */
export class ParameterError extends InputError {}

/**
 * The run's parameters: each declared one from `given` (checked against its type) or its default;
 * a parameter without a default that is not given, or one given that is not declared, is refused.
 */
export function resolveParams(
  playbook: Pick<Playbook, 'name' | 'parameters'>,
  given: Record<string, unknown>,
): Record<string, unknown> {
  const problems: string[] = [];
  const resolved: Record<string, unknown> = {};
  for (const name of Object.keys(given)) {
    if (!(name in playbook.parameters)) {
      problems.push(`${name}: is not a parameter of ${playbook.name} (got ${shown(given[name])})`);
    }
  }
  for (const [name, p] of Object.entries(playbook.parameters)) {
    const value = given[name] ?? p.default;
    if (value === undefined) {
      problems.push(`${name}: is required (a ${p.type}, no default) (got missing)`);
      continue;
    }
    const ok = paramValue[p.type].safeParse(value);
    if (ok.success) resolved[name] = ok.data;
    else problems.push(`${name}: is not a ${p.type} (got ${shown(value)})`);
  }
  if (problems.length > 0) {
    throw new ParameterError(`invalid parameters of ${playbook.name}: ${problems.join('; ')}`);
  }
  return resolved;
}

/** A parameter given as text (CLI `--param k=v`) in its declared type; undefined if unknown. */
export function paramFromText(p: Parameter | undefined, text: string): unknown {
  if (!p) return text;
  switch (p.type) {
    case 'number':
      return /^-?[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : text;
    case 'boolean':
      return text === 'true' ? true : text === 'false' ? false : text;
    case 'list':
      return text === '' ? [] : text.split(',').map((s) => s.trim());
    case 'string':
    case 'duration':
    case 'instant':
      return text;
  }
}

/** The workflow id of an incident's playbook run: one active run per incident. */
export function playbookWorkflowId(incident: string): string {
  return `playbook/${incident}`;
}

export const incidentIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'is not an incident id: letters, digits, . _ -');
