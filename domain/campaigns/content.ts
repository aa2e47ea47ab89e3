/**
 * A campaign's content for one person: handlebars templates (subject, html, plain text; html
 * escaped by handlebars, text not) over the person's audience features and, when the template
 * asks, the top-N recommendations of a decision surface, scored by the same Decider that serves
 * /v1/decide (its routed production model, the popular items as the fallback it documents).
 */
import Handlebars from 'handlebars';
import type { Queryable } from '../../common/db.js';
import type { Decider } from '../decide/decider.js';
import type { Campaign } from './definition.js';
import type { Recipient, RenderedMail } from './send.js';

export interface Recommendation {
  itemId: string;
  title: string | null;
  score: number;
}

/** What a template sees. */
export interface TemplateContext {
  campaign: { name: string; fireTime: string };
  person: { key: string; timeZone: string; features: Record<string, unknown> };
  recommendations: Recommendation[];
  /** Why the rules, not the model, chose the recommendations (null: the model did). */
  recommendationFallback: string | null;
  unsubscribeUrl: string;
}

type Compiled = { subject: HandlebarsTemplateDelegate; html: HandlebarsTemplateDelegate };
type CompiledAll = Compiled & { text: HandlebarsTemplateDelegate };

const compiledCache = new Map<string, CompiledAll>();

/** Compiles (once per definition text) and checks the templates; throws naming the part. */
export function compileTemplates(campaign: Campaign): CompiledAll {
  const cacheKey = JSON.stringify([
    campaign.subject,
    campaign.template.html,
    campaign.template.text,
  ]);
  const cached = compiledCache.get(cacheKey);
  if (cached) return cached;
  const compile = (part: string, source: string, noEscape: boolean) => {
    try {
      const template = Handlebars.compile(source, { strict: false, noEscape });
      // Compilation is lazy in handlebars: run once on an empty context to surface syntax errors.
      Handlebars.precompile(source);
      return template;
    } catch (err) {
      throw new Error(`template.${part}: ${(err as Error).message.split('\n')[0]}`);
    }
  };
  const all = {
    subject: compile('subject', campaign.subject, true),
    html: compile('html', campaign.template.html, false),
    text: compile('text', campaign.template.text, true),
  };
  if (compiledCache.size > 200) compiledCache.clear();
  compiledCache.set(cacheKey, all);
  return all;
}

/** The user id (else anonymous id) a person key decides under. */
async function decisionIdOf(
  db: Queryable,
  personKey: string,
): Promise<{ userId?: string; anonymousId?: string }> {
  if (personKey.startsWith('unresolved:')) return { userId: personKey.slice('unresolved:'.length) };
  const { rows } = await db.query<{ type: string; value: string }>(
    `select i.type, i.value from persons p join identifiers i on i.person_id = p.id
      where p.canonical_id = case when $1 ~ '^[0-9]{1,18}$' then $1::bigint end
        and i.type in ('user_id', 'anonymous_id')
      order by (i.type = 'user_id') desc, i.first_seen_at limit 1`,
    [personKey],
  );
  const row = rows[0];
  if (!row) return { anonymousId: personKey };
  return row.type === 'user_id' ? { userId: row.value } : { anonymousId: row.value };
}

/** The top-k of the surface for the person, with item titles. */
export async function recommend(
  db: Queryable,
  decider: Decider,
  input: { surface: string; k: number; personKey: string },
): Promise<{ items: Recommendation[]; fallback: string | null }> {
  const ids = await decisionIdOf(db, input.personKey);
  const decision = await decider.decide({ surface: input.surface, k: input.k, ...ids });
  const { rows } = await db.query<{ item_id: string; title: string | null }>(
    // Titles of the surface's model's source: an item id means another film in another source.
    `select i.item_id, i.title from items i
       join surfaces s on s.name = $2
       join models m on m.name = s.model
      where i.source = m.source and i.item_id = any($1::text[])`,
    [decision.items.map((i) => i.itemId), input.surface],
  );
  const titles = new Map(rows.map((r) => [r.item_id, r.title]));
  return {
    items: decision.items.map((i) => ({
      itemId: i.itemId,
      title: titles.get(i.itemId) ?? null,
      score: i.score,
    })),
    fallback: decision.fallback,
  };
}

/**
 * Checks a definition's templates before it is stored: each part compiles, and renders once on a
 * sample context (handlebars finds a missing helper or partial only when it renders). Returns the
 * problems, naming the part; empty when none.
 */
export function templateProblems(campaign: Campaign): string[] {
  let templates: CompiledAll;
  try {
    templates = compileTemplates(campaign);
  } catch (err) {
    return [(err as Error).message];
  }
  const sample: TemplateContext = {
    campaign: { name: campaign.name, fireTime: new Date(0).toISOString() },
    person: { key: 'sample', timeZone: 'UTC', features: {} },
    recommendations: [{ itemId: 'sample', title: 'A sample item', score: 1 }],
    recommendationFallback: null,
    unsubscribeUrl: 'http://127.0.0.1/v1/unsubscribe/sample',
  };
  const problems: string[] = [];
  for (const part of ['subject', 'html', 'text'] as const) {
    try {
      templates[part](sample);
    } catch (err) {
      problems.push(`template.${part}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return problems;
}

/** Renders a campaign for a recipient. */
export async function renderCampaign(
  db: Queryable,
  decider: Decider | undefined,
  campaign: Campaign,
  fireTime: Date,
  recipient: Recipient,
  unsubscribe: string,
): Promise<RenderedMail & { context: TemplateContext }> {
  const templates = compileTemplates(campaign);
  const rec = campaign.template.recommendations;
  const picked =
    rec && decider
      ? await recommend(db, decider, {
          surface: rec.surface,
          k: rec.k,
          personKey: recipient.personKey,
        })
      : { items: [], fallback: null };
  const context: TemplateContext = {
    campaign: { name: campaign.name, fireTime: fireTime.toISOString() },
    person: {
      key: recipient.personKey,
      timeZone: recipient.timeZone,
      features: recipient.features,
    },
    recommendations: picked.items,
    recommendationFallback: picked.fallback,
    unsubscribeUrl: unsubscribe,
  };
  return {
    subject: templates
      .subject(context)
      .replace(/[\r\n]+/g, ' ')
      .trim(),
    html: templates.html(context),
    text: templates.text(context),
    context,
  };
}

/** The html part of a notice: its text, escaped, one paragraph per blank-line block. */
export function noticeHtml(text: string): string {
  return text
    .split(/\n{2,}/)
    .map((p) => `<p>${Handlebars.escapeExpression(p).replace(/\n/g, '<br>')}</p>`)
    .join('\n');
}
