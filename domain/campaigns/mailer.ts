/**
 * Outbound mail: a pooled nodemailer SMTP transport with a shared rate limit, and one send that
 * says how it ended. The message is composed first (nodemailer's MailComposer) and handed over as
 * a stream, so the send knows whether SMTP read the whole body: a failure before that delivered
 * nothing (retrying is safe), one after it (the connection lost after DATA) may have delivered,
 * and is `unknown`. 4xx answers are temporary, 5xx permanent.
 */
import { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { Transporter } from 'nodemailer';

export interface SmtpSettings {
  /** smtp://user:pass@host:port or smtps://…; `?ignoreTLS=1` skips STARTTLS. */
  url: string;
  maxConnections: number;
  /** Messages per second across the pool (0: no limit). */
  ratePerSecond: number;
}

/** A message as pops composes it. */
export interface OutgoingMail {
  from: string;
  to: string;
  subject: string;
  html: string;
  text: string;
  messageId: string;
  headers: Record<string, string>;
}

export type SendOutcome =
  | { kind: 'sent'; response: string }
  | { kind: 'temporary'; response: string }
  | { kind: 'permanent'; response: string }
  | { kind: 'not_sent'; response: string }
  | { kind: 'unknown'; response: string };

/** A pooled transport; `close()` ends its connections. */
export interface Mailer {
  send(mail: OutgoingMail): Promise<SendOutcome>;
  close(): void;
}

/** Builds the transport of `settings` (nodemailer pools connections and limits the rate). */
export function createMailer(settings: SmtpSettings): Mailer {
  const url = new URL(settings.url);
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') {
    throw new Error(`POPS_SMTP_URL: must start with smtp:// or smtps:// (got ${url.protocol})`);
  }
  const transport: Transporter = nodemailer.createTransport({
    pool: true,
    host: url.hostname,
    port: Number(url.port || (url.protocol === 'smtps:' ? 465 : 25)),
    secure: url.protocol === 'smtps:',
    ignoreTLS: url.searchParams.get('ignoreTLS') === '1',
    ...(url.username
      ? {
          auth: {
            user: decodeURIComponent(url.username),
            pass: decodeURIComponent(url.password),
          },
        }
      : {}),
    maxConnections: settings.maxConnections,
    maxMessages: Infinity,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
    ...(settings.ratePerSecond > 0 ? { rateDelta: 1000, rateLimit: settings.ratePerSecond } : {}),
  });
  return {
    send: (mail) => sendOne(transport, mail),
    close: () => transport.close(),
  };
}

/** The RFC 5322 bytes of a message. */
export function composeMessage(mail: OutgoingMail): Promise<Buffer> {
  const composer = new MailComposer({
    from: mail.from,
    to: mail.to,
    subject: mail.subject,
    html: mail.html,
    text: mail.text,
    messageId: mail.messageId,
    headers: mail.headers,
  });
  return composer.compile().build();
}

async function sendOne(transport: Transporter, mail: OutgoingMail): Promise<SendOutcome> {
  const raw = await composeMessage(mail);
  let bodyRead = false;
  const stream = Readable.from([raw], { objectMode: false });
  stream.once('end', () => {
    bodyRead = true;
  });
  try {
    const info = (await transport.sendMail({
      envelope: { from: mail.from, to: [mail.to] },
      raw: stream,
    })) as { response?: string };
    return { kind: 'sent', response: String(info.response ?? '') };
  } catch (err) {
    return classify(err, bodyRead);
  }
}

/** What a nodemailer error means for the message. */
export function classify(err: unknown, bodyRead: boolean): SendOutcome {
  const e = err as { responseCode?: number; response?: string; message?: string };
  const response = String(e.response ?? e.message ?? err).slice(0, 500);
  const code = e.responseCode;
  if (code !== undefined && code >= 400 && code < 500) return { kind: 'temporary', response };
  if (code !== undefined && code >= 500) return { kind: 'permanent', response };
  // No SMTP answer: the connection failed. After the body was read, the server may have it.
  return bodyRead ? { kind: 'unknown', response } : { kind: 'not_sent', response };
}
