/**
 * Conditions and templates of playbooks, in jexl (a small expression language: no eval, no access
 * to anything but the context it is given). `when:` and `expect:` are expressions; a string in
 * `with:` may hold `${expression}` parts: a string that is one whole `${…}` takes the value's own
 * type, otherwise the parts are interpolated as text.
 *
 * Evaluated with jexl's synchronous API inside the workflow: evaluation is a pure function of the
 * expression and the context (parameters, the incident, recorded step outputs), all of which are in
 * the workflow's history, so a replay computes the same branch without an activity round trip.
 * Pure, for workflow code.
 */
import jexl from 'jexl';

type Jexl = InstanceType<typeof jexl.Jexl>;

function makeJexl(): Jexl {
  const j = new jexl.Jexl();
  j.addTransform('length', (v: unknown) =>
    Array.isArray(v) || typeof v === 'string' ? v.length : 0,
  );
  j.addTransform('join', (v: unknown, sep: unknown) =>
    Array.isArray(v) ? v.join(typeof sep === 'string' ? sep : ',') : String(v),
  );
  return j;
}

const engine = makeJexl();

/** What expressions see. */
export interface ExpressionContext {
  params: Record<string, unknown>;
  steps: Record<string, unknown>;
  incident: Record<string, unknown>;
  output?: unknown;
}

const TEMPLATE = /\$\{([^}]*)\}/g;
const WHOLE = /^\$\{([^}]*)\}$/;

/** Whether a value is a template string. */
export function isTemplate(value: unknown): value is string {
  return typeof value === 'string' && /\$\{[^}]*\}/.test(value);
}

/** The expressions inside a template string. */
export function templateExpressions(text: string): string[] {
  return [...text.matchAll(TEMPLATE)].map((m) => m[1] ?? '');
}

/** Throws jexl's message when the expression does not parse. */
export function checkSyntax(expression: string): void {
  engine.compile(expression);
}

/** The step ids and parameter names an expression refers to (`steps.x…`, `params.y…`). */
export function references(expression: string): { steps: string[]; params: string[] } {
  const names = (re: RegExp) => [...expression.matchAll(re)].map((m) => m[1] ?? '');
  return {
    steps: names(/\bsteps\.([A-Za-z_][A-Za-z0-9_]*)/g),
    params: names(/\bparams\.([A-Za-z_][A-Za-z0-9_]*)/g),
  };
}

/** Evaluates an expression (synchronously). */
export function evaluate(expression: string, context: ExpressionContext): unknown {
  return engine.evalSync(expression, context as unknown as Record<string, unknown>);
}

/** Whether an expression holds (jexl truthiness: null, undefined, false, 0 and '' do not). */
export function holds(expression: string, context: ExpressionContext): boolean {
  return Boolean(evaluate(expression, context));
}

/**
 * Resolves every template inside a value (objects and arrays walked), leaving the rest. A field
 * whose whole template resolves to null or undefined is left out, so `${cond ? x : null}` makes an
 * argument optional.
 */
export function resolveTemplates(value: unknown, context: ExpressionContext): unknown {
  if (typeof value === 'string') {
    const whole = WHOLE.exec(value);
    if (whole) return evaluate(whole[1] ?? '', context);
    if (!isTemplate(value)) return value;
    return value.replace(TEMPLATE, (_, expr: string) => text(evaluate(expr, context)));
  }
  if (Array.isArray(value)) return value.map((v) => resolveTemplates(v, context));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .map(([k, v]) => [k, resolveTemplates(v, context)] as const)
        .filter(([, v]) => v !== undefined && v !== null),
    );
  }
  return value;
}

function text(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value) ?? '';
}

/** Every expression in a value: the insides of its template strings, walked through objects. */
export function expressionsIn(value: unknown): string[] {
  if (typeof value === 'string') return templateExpressions(value);
  if (Array.isArray(value)) return value.flatMap(expressionsIn);
  if (value !== null && typeof value === 'object') {
    return Object.values(value).flatMap(expressionsIn);
  }
  return [];
}
