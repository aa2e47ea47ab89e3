/**
 * `pops audit list|show`, `pops audit verify [--checkpoint <file|url>]` and
 * `pops audit checkpoint [--out <file>]`. `list` reads the log by action, actor, subject, workflow
 * and time, newest first; `show` prints one row whole (inputs, outputs, hashes). The
 * chain's hashes show an edited or reordered row, but not rows cut from its end: a checkpoint (the
 * latest row's seq and hash) kept outside the database, by an auditor, anchors it. `checkpoint`
 * prints one, or appends it as a JSON line to a file; `verify --checkpoint` checks every
 * checkpoint of a file (JSON lines, or one JSON object) or of a URL that answers one (such as
 * GET /v1/audit/checkpoint of another deployment's copy, or the auditor's own store).
 */
import fs from 'node:fs';
import { z } from 'zod';
import {
  auditCheckpoint,
  type AuditCheckpoint,
  auditSearchSchema,
  searchAudit,
  verifyAudit,
  verifyCheckpoints,
} from '../domain/audit.js';
import { checkWritable, parseArgs, print, table, UsageError } from './output.js';
import { openDatabase } from './runtime.js';

const checkpointSchema = z.object({
  seq: z.number().int().positive(),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  takenAt: z.string().min(1),
});
const verifyArgs = z.object({
  checkpoint: z.string().min(1).optional(),
  json: z.boolean().default(false),
});
const checkpointArgs = z.object({
  out: z.string().min(1).optional(),
  json: z.boolean().default(false),
});

/** The checkpoints of a file or URL: JSON lines, or one JSON object (`{ checkpoint }` too). */
async function readCheckpoints(where: string): Promise<AuditCheckpoint[]> {
  let text: string;
  if (/^https?:\/\//.test(where)) {
    const response = await fetch(where, { headers: { accept: 'application/json' } }).catch(
      (err: unknown) => {
        const cause = (err as { cause?: { message?: string } }).cause?.message;
        throw new UsageError(`--checkpoint ${where}: could not fetch it (${cause ?? String(err)})`);
      },
    );
    if (!response.ok) {
      // No credentials are sent (a token is not handed to whatever URL is given). pops's own
      // /v1/audit/checkpoint is the head now, not a checkpoint kept away from the database.
      const hint =
        response.status === 401 || response.status === 403
          ? ' (fetched without credentials: give a file, or a store that answers without a' +
            " token; pops's own /v1/audit/checkpoint is where a checkpoint is taken, not kept)"
          : '';
      throw new UsageError(`--checkpoint ${where}: answered ${response.status}${hint}`);
    }
    text = await response.text();
  } else {
    try {
      text = fs.readFileSync(where, 'utf8');
    } catch (err) {
      throw new UsageError(`--checkpoint ${where}: ${(err as Error).message}`);
    }
  }
  // One JSON document (as `pops audit checkpoint --json` prints it), else JSON lines.
  let lines: string[];
  try {
    JSON.parse(text);
    lines = [text];
  } catch {
    lines = text.split('\n');
  }
  const checkpoints: AuditCheckpoint[] = [];
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      throw new UsageError(`--checkpoint ${where}: line ${i + 1} is not JSON`);
    }
    const inner = (json as { checkpoint?: unknown }).checkpoint ?? json;
    const parsed = checkpointSchema.safeParse(inner);
    if (!parsed.success) {
      throw new UsageError(`--checkpoint ${where}: line ${i + 1} is not {seq, hash, takenAt}`);
    }
    checkpoints.push(parsed.data);
  }
  if (checkpoints.length === 0) throw new UsageError(`--checkpoint ${where}: holds no checkpoint`);
  return checkpoints;
}

/** `pops audit verify [--checkpoint <file|url>]`: exit 1 when the chain or a checkpoint fails. */
export async function verifyCommand(options: Record<string, unknown>) {
  const args = parseArgs(verifyArgs, options);
  const checkpoints = args.checkpoint ? await readCheckpoints(args.checkpoint) : [];
  const rt = await openDatabase();
  try {
    const chain = await verifyAudit(rt.pool);
    const anchored =
      chain.ok && checkpoints.length > 0 ? await verifyCheckpoints(rt.pool, checkpoints) : null;
    const ok = chain.ok && (anchored === null || anchored.ok);
    print(args.json, { ...chain, ok, checkpoints: anchored }, () => {
      if (!chain.ok) {
        const before = `${chain.rows} rows verified before it`;
        return `broken at row ${chain.seq}: ${chain.reason} (${before})`;
      }
      if (anchored && !anchored.ok) return `chain ok (${chain.rows} rows) but ${anchored.reason}`;
      const suffix = anchored
        ? `, ${anchored.checked} checkpoint(s) match`
        : ' (no checkpoint given: a cut end would not show)';
      return `ok, ${chain.rows} rows${suffix}`;
    });
    if (!ok) process.exitCode = 1;
  } finally {
    await rt.close();
  }
}

/** `pops audit checkpoint [--out <file>]`: the head of the chain, printed or appended to a file. */
export async function checkpointCommand(options: Record<string, unknown>) {
  const args = parseArgs(checkpointArgs, options);
  if (args.out) checkWritable(args.out);
  const rt = await openDatabase();
  try {
    const chain = await verifyAudit(rt.pool);
    if (!chain.ok) {
      throw new UsageError(
        `the chain is broken at row ${chain.seq}: ${chain.reason}; no checkpoint`,
      );
    }
    const checkpoint = await auditCheckpoint(rt.pool);
    if (!checkpoint) throw new UsageError('the audit log is empty: nothing to anchor yet');
    if (args.out) fs.appendFileSync(args.out, `${JSON.stringify(checkpoint)}\n`);
    print(args.json, checkpoint, () =>
      args.out
        ? `appended checkpoint of row ${checkpoint.seq} to ${args.out};` +
          " keep it where the database's admins cannot write"
        : JSON.stringify(checkpoint),
    );
  } finally {
    await rt.close();
  }
}

const listArgs = auditSearchSchema.extend({ json: z.boolean().default(false) });
const showArgs = z.object({
  seq: z.coerce.number().int().positive(),
  json: z.boolean().default(false),
});

/** `pops audit list [--action A] [--actor X] [--subject S] [--workflow W] [--since T] …`. */
export async function listCommand(options: Record<string, unknown>) {
  const { workflow, ...rest } = options;
  const { json, ...search } = parseArgs(listArgs, {
    ...rest,
    ...(workflow === undefined ? {} : { workflowId: workflow }),
  });
  const rt = await openDatabase();
  try {
    const rows = await searchAudit(rt.pool, search);
    print(json, rows, () => {
      if (rows.length === 0) return 'no audit row matches';
      const lines = table(
        ['seq', 'at', 'actor', 'action', 'subject', 'workflow'],
        rows.map((r) => [
          String(r.seq),
          r.at.toISOString().slice(0, 19),
          r.actor,
          r.action,
          r.subject,
          r.workflowId ?? '',
        ]),
      );
      const last = rows[rows.length - 1];
      const more = rows.length === search.limit && last ? `\n(more: --before ${last.seq})` : '';
      return `${lines}${more}\npops audit show <seq> prints a row with its inputs and outputs`;
    });
  } finally {
    await rt.close();
  }
}

/** `pops audit show <seq>`: one row whole. */
export async function showCommand(seq: string, options: Record<string, unknown>) {
  const args = parseArgs(showArgs, { ...options, seq });
  const rt = await openDatabase();
  try {
    const [row] = await searchAudit(rt.pool, { before: args.seq + 1, limit: 1 });
    if (!row || row.seq !== args.seq) throw new UsageError(`<seq> ${args.seq}: no such audit row`);
    print(args.json, row, () => JSON.stringify(row, null, 2));
  } finally {
    await rt.close();
  }
}
