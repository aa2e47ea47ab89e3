/**
 * Campaign definitions: who (an audience filter over feature values and a consent purpose), when
 * (a cron in an IANA zone, or each person's local time), how often at most (a frequency cap
 * across campaigns), how late a fire time may still send, quiet hours, holdout share, and what
 * (sender, subject, handlebars html and text, recommendations from a decision surface). Pure zod
 * and data, so workflow code may import it. Validated wherever it enters (YAML, API, workflow).
 */
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { CONSENT_PURPOSES } from '../privacy/consent.js';

/** Campaign names are path-safe: they appear in workflow, schedule and file names. */
export const campaignNameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,62}$/, 'is not a campaign name (a-z, 0-9, -; starts with a letter)');

/** `30s`, `30m`, `6h`, `7d` as milliseconds (a number is already milliseconds, as stored). */
export const durationSchema = z.union([
  z.number().int().positive(),
  z
    .string()
    .regex(/^[1-9][0-9]{0,5}[smhd]$/, 'is not a duration like 30s, 30m, 6h or 7d')
    .transform((v) => Number(v.slice(0, -1)) * UNIT_MS[v.slice(-1) as keyof typeof UNIT_MS]),
]);

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** An IANA zone that Intl knows (Intl is deterministic, so workflow code may call this). */
export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export const timeZoneSchema = z
  .string()
  .min(1)
  .max(64)
  .refine(isTimeZone, 'is not an IANA time zone (e.g. Europe/Berlin)');

/** `HH:MM`, 24-hour. */
export const clockSchema = z
  .string()
  .regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, 'is not a time of day HH:MM (00:00-23:59)');

/** A cron of five fields (minute hour day-of-month month day-of-week). */
const cronSchema = z
  .string()
  .trim()
  .regex(/^(\S+\s+){4}\S+$/, 'is not a cron of five fields (minute hour day month weekday)')
  .superRefine((cron, ctx) => {
    if (!/^(\S+\s+){4}\S+$/.test(cron)) return;
    try {
      CronExpressionParser.parse(cron);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `is not a valid cron (${(err as Error).message})` });
    }
  });

const number = z.number().finite();

/** One condition over a person feature's value in one window; all conditions must hold. */
const conditionSchema = z
  .strictObject({
    feature: z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, 'is not a feature name'),
    /** The registered version; the latest when left out (resolved when the run snapshots). */
    version: z.number().int().positive().optional(),
    /** A window of the feature (`lifetime`, `30d`); its first window when left out. */
    window: z.string().min(1).max(16).optional(),
    between: z.tuple([number, number]).optional(),
    gte: number.optional(),
    gt: number.optional(),
    lte: number.optional(),
    lt: number.optional(),
    eq: z.union([number, z.boolean()]).optional(),
  })
  .refine(
    (c) => ['between', 'gte', 'gt', 'lte', 'lt', 'eq'].some((k) => k in c),
    'needs one of between, gte, gt, lte, lt, eq',
  )
  .refine((c) => !c.between || c.between[0] <= c.between[1], {
    message: 'the low end is above the high end',
    path: ['between'],
  });
export type AudienceCondition = z.infer<typeof conditionSchema>;

const audienceSchema = z.strictObject({
  /** The consent purpose checked at send time (H9's consent; marketing is opt-in). */
  purpose: z.enum(CONSENT_PURPOSES).default('marketing'),
  /** `online`: the latest snapshots; `offline`: the snapshot as of the fire time. */
  store: z.enum(['online', 'offline']).default('online'),
  where: z.array(conditionSchema).min(1).max(20),
});

const scheduleSchema = z.union([
  z.strictObject({ cron: cronSchema, timeZone: timeZoneSchema }),
  z.strictObject({
    /** Each person's local time: the run fires at `cron` (UTC, daily at 00:00 by default) and
     * holds each person until the next `localTime` in their zone. */
    localTime: clockSchema,
    cron: cronSchema.default('0 0 * * *'),
  }),
]);

const quietHoursSchema = z.strictObject({
  /** The window in each person's zone, [start, end); may wrap midnight (21:00-08:00). */
  start: clockSchema,
  end: clockSchema,
  /** `hold`: send when the window ends; `skip`: record the skip and send nothing. */
  behaviour: z.enum(['hold', 'skip']),
});

const templateSchema = z.strictObject({
  /** Handlebars; helpers none beyond the built-ins. `{{unsubscribeUrl}}` is always defined. */
  html: z.string().min(1).max(200_000),
  text: z.string().min(1).max(100_000),
  recommendations: z
    .strictObject({
      /** The decision surface that scores (its routed production model, rules as fallback). */
      surface: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'is not a surface name'),
      k: z.number().int().min(1).max(20).default(5),
    })
    .optional(),
});

export const campaignSchema = z.strictObject({
  name: campaignNameSchema,
  description: z.string().max(2000).optional(),
  audience: audienceSchema,
  schedule: scheduleSchema,
  /** Fire times that begin later than this after their time are skipped and recorded. */
  maxLateness: durationSchema.default(3_600_000),
  /** The Temporal Schedule's catch-up window (missed fire times within it still start). */
  catchUpWindow: durationSchema.default(3_600_000),
  quietHours: quietHoursSchema.optional(),
  /** At most `max` marketing emails per person in any `days` rolling days, across campaigns. */
  frequencyCap: z
    .strictObject({ max: z.number().int().min(1).max(100), days: z.number().int().min(1).max(90) })
    .optional(),
  holdout: z
    .strictObject({
      percent: z.number().min(0).max(50),
      /** Salted so that two campaigns hold out different persons; the name when left out. */
      salt: z.string().min(1).max(100).optional(),
    })
    .default({ percent: 0 }),
  /** A zone for persons whose events and traits name none. */
  defaultTimeZone: timeZoneSchema.default('UTC'),
  sender: z.email({ error: 'is not an email address' }),
  subject: z.string().min(1).max(300),
  template: templateSchema,
});

export type Campaign = z.output<typeof campaignSchema>;
export type CampaignInput = z.input<typeof campaignSchema>;

export {
  campaignScheduleId,
  campaignWorkflowId,
  fireTimeText,
  NOTICE_FIRE_TIME,
  noticeCampaign,
} from './names.js';
