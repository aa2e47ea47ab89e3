/**
 * The dry run of a playbook: its parameters resolved (defaults and types), each step with its
 * arguments as far as they can be known before the run (templates on parameters and the incident
 * resolved, those on step outputs shown as written), and the branch each `when:` takes: decided
 * now when it reads only parameters and the incident, "at run time" when it reads a step's output.
 * No side effects: pure.
 */
import { type Playbook, resolveParams } from './definition.js';
import {
  type ExpressionContext,
  expressionsIn,
  holds,
  references,
  resolveTemplates,
} from './expressions.js';
import { UNDOABLE } from './steps.js';

export interface PlannedStep {
  id: string;
  type: string;
  title: string | null;
  when: string | null;
  /** runs | skipped | decided at run time (the condition reads step outputs). */
  branch: 'runs' | 'skipped' | 'at run time';
  args: unknown;
  /** Arguments that read step outputs, resolved at run time. */
  pending: string[];
  expect: string | null;
  retries: number;
  timeout: string;
  onFailure: string;
  undo: boolean;
}

export interface Plan {
  playbook: string;
  version: number;
  description: string;
  params: Record<string, unknown>;
  steps: PlannedStep[];
}

/** Plans a run; throws ParameterError for parameters that do not fit. */
export function planRun(
  playbook: Playbook,
  given: Record<string, unknown>,
  incident: Record<string, unknown>,
): Plan {
  const params = resolveParams(playbook, given);
  const context: ExpressionContext = { params, steps: {}, incident };
  const steps = playbook.steps.map((step): PlannedStep => {
    const readsSteps = (e: string) => references(e).steps.length > 0;
    let branch: PlannedStep['branch'] = 'runs';
    if (step.when) {
      if (readsSteps(step.when)) branch = 'at run time';
      else branch = safeHolds(step.when, context) ? 'runs' : 'skipped';
    }
    const pending = Object.entries(step.with)
      .filter(([, v]) => expressionsIn(v).some(readsSteps))
      .map(([k]) => k);
    const known = Object.fromEntries(
      Object.entries(step.with).map(([k, v]) => [
        k,
        pending.includes(k) ? v : resolveTemplates(v, context),
      ]),
    );
    return {
      id: step.id,
      type: step.type,
      title: step.title ?? null,
      when: step.when ?? null,
      branch,
      args: known,
      pending,
      expect: step.expect ?? null,
      retries: step.retries,
      timeout: step.timeout,
      onFailure: step.on_failure,
      undo: UNDOABLE.has(step.type) && step.compensate,
    };
  });
  return {
    playbook: playbook.name,
    version: playbook.version,
    description: playbook.description,
    params,
    steps,
  };
}

function safeHolds(expression: string, context: ExpressionContext): boolean {
  try {
    return holds(expression, context);
  } catch {
    return false;
  }
}
