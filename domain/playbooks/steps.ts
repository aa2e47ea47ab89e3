/**
 * The step types of a playbook and the arguments (`with:`) each takes, as zod shapes. A value in
 * `with:` may be a template (`${params.model}`, see expressions.ts): at load it is accepted in
 * place of any value, at run time the resolved arguments are checked against these shapes. Pure,
 * for workflow code.
 */
import { z } from 'zod';
import { surfaceNameSchema } from '../decide/routing.js';
import { modelNameSchema, plainText } from '../retrain.js';
import { versionNumberSchema } from '../rollback.js';
import { durationSchema } from '../rollout/config.js';

const isoInstant = z.iso.datetime({ offset: true });
const person = plainText(200);
// A day as text: z.iso.date() refused valid days inside the workflow sandbox ("expected date,
// received string"; cause not found), so a pattern checks them.
const day = z.string().regex(/^[0-9]{4}-[0-9]{2}-[0-9]{2}$/, 'is not a day (YYYY-MM-DD)');
const url = z.url({ protocol: /^https?$/ }).max(2000);

/** The arguments of each step type, before templates are allowed in. */
export const STEP_ARGS = {
  freeze_rollouts: z
    .strictObject({ surface: surfaceNameSchema.optional(), model: modelNameSchema.optional() })
    .refine((a) => a.surface !== undefined || a.model !== undefined, {
      message: 'needs surface or model',
      path: ['surface'],
    }),
  rollback_model: z.strictObject({
    model: modelNameSchema,
    to_version: versionNumberSchema.optional(),
    /** Route every surface of the model to the version production returns to. */
    reroute: z.boolean().default(true),
  }),
  set_mode: z.strictObject({
    surface: surfaceNameSchema,
    mode: z.enum(['normal', 'conservative', 'rules-only']),
  }),
  identify_scope: z
    .strictObject({
      surface: surfaceNameSchema.optional(),
      model: modelNameSchema.optional(),
      version: versionNumberSchema.optional(),
      from: isoInstant.optional(),
      to: isoInstant.optional(),
    })
    .refine((a) => a.version !== undefined || a.from !== undefined, {
      message: 'needs a version or a window (from, to)',
      path: ['version'],
    }),
  notify: z
    .strictObject({
      webhook: url.optional(),
      summary: plainText(4000).optional(),
      email: z
        .strictObject({
          subject: plainText(200),
          text: plainText(20_000),
          purpose: z.enum(['personalization', 'marketing', 'analytics']).default('personalization'),
        })
        .optional(),
    })
    .refine((a) => a.webhook !== undefined || a.email !== undefined, {
      message: 'needs webhook or email',
      path: ['webhook'],
    }),
  approval: z.strictObject({
    approvers: z.array(person).max(50).default([]),
    quorum: z.number().int().min(1).max(50).default(1),
    distinct_from_initiator: z.boolean().default(true),
    timeout: durationSchema.default('24h'),
    on_timeout: z.enum(['approve', 'reject', 'escalate']).default('reject'),
    escalate_to: z.array(person).max(50).default([]),
    escalate_webhook: url.optional(),
    prompt: plainText(1000).optional(),
  }),
  wait: z.strictObject({ duration: durationSchema }),
  run_workflow: z.strictObject({
    workflow: z.enum(['backfillFeatures', 'retrainModel', 'rollbackModel']),
    input: z.record(z.string(), z.unknown()),
  }),
  http: z.strictObject({
    url,
    method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).default('POST'),
    headers: z.record(z.string(), z.string().max(2000)).default({}),
    body: z.unknown().optional(),
    /**
     * An environment variable of the worker holding a bearer token for the call: the secret stays
     * out of the definition, the parameters and the workflow's history.
     */
    auth_env: z
      .string()
      .regex(
        /^POPS_PLAYBOOK_[A-Z0-9_]{1,50}$/,
        'must name a variable POPS_PLAYBOOK_… (only those are sent: a playbook never reads' +
          " the worker's other secrets)",
      )
      .optional(),
    /** Statuses that count as success. */
    ok_status: z.array(z.number().int().min(100).max(599)).default([200, 201, 202, 204]),
  }),
  record: z.strictObject({ message: plainText(4000), data: z.unknown().optional() }),
  /** Every surface of the model (or the one surface) must serve the version. */
  verify_serving: z
    .strictObject({
      surface: surfaceNameSchema.optional(),
      model: modelNameSchema.optional(),
      version: versionNumberSchema,
      /** Probe decisions asked of the decider per surface, one per probe person. */
      probes: z.number().int().min(1).max(500).default(20),
    })
    .refine((a) => a.surface !== undefined || a.model !== undefined, {
      message: 'needs surface or model',
      path: ['surface'],
    }),
  check_quality: z.strictObject({
    features: z.array(z.string().regex(/^[a-z0-9_.-]+@[0-9]+$/, 'is not name@version')).min(1),
    from: day,
    to: day,
  }),
  stop_campaigns: z.strictObject({
    names: z.array(z.string().min(1).max(100)).optional(),
    suppress_scope: z.boolean().default(true),
  }),
  export_scope: z.strictObject({ format: z.enum(['csv']).default('csv') }),
} as const;

export type StepType = keyof typeof STEP_ARGS;
export const STEP_TYPES = Object.keys(STEP_ARGS) as StepType[];

/** The resolved arguments of a step type. */
export type StepArgs<T extends StepType> = z.output<(typeof STEP_ARGS)[T]>;

/** Step types whose effect has an undo that compensation runs. */
export const UNDOABLE: ReadonlySet<StepType> = new Set([
  'freeze_rollouts',
  'rollback_model',
  'set_mode',
  'stop_campaigns',
]);

/** What every step may say besides its type and arguments. */
export const stepCommonShape = {
  id: z
    .string()
    .regex(/^[a-z][a-z0-9_]{0,62}$/, 'is not a step id: a lowercase letter, then a-z, 0-9, _'),
  title: plainText(200).optional(),
  when: z.string().min(1).max(2000).optional(),
  /** A condition on the step's output (`output.…`); false fails the attempt. */
  expect: z.string().min(1).max(2000).optional(),
  /** Attempts after the first, for errors and for an unmet expect. */
  retries: z.number().int().min(0).max(20).default(3),
  timeout: durationSchema.default('2m'),
  on_failure: z.enum(['stop', 'continue', 'compensate']).default('stop'),
  /** Whether compensation undoes this step (types in UNDOABLE only). */
  compensate: z.boolean().default(true),
};
