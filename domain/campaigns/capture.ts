/**
 * The local mail catcher `pops serve` starts when POPS_SMTP_URL is unset: an SMTP server on
 * loopback (the smtp-server package) that accepts every message and writes it as an .eml file
 * under `<state dir>/mail/`, so a trial run shows exactly what would have been sent and nothing
 * leaves the machine.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { SMTPServer } from 'smtp-server';
import type { Logger } from '../../common/logger.js';

export interface MailCatcher {
  dir: string;
  port: number;
  close(): Promise<void>;
}

/** Starts the catcher on 127.0.0.1:`port`, writing into `dir`. */
export async function startMailCatcher(
  dir: string,
  port: number,
  log: Logger,
): Promise<MailCatcher> {
  fs.mkdirSync(dir, { recursive: true });
  let n = 0;
  const server = new SMTPServer({
    // The greeting names the folder, so another pops's catcher is told apart from this one's.
    banner: bannerOf(dir),
    disabledCommands: ['STARTTLS', 'AUTH'],
    authOptional: true,
    logger: false,
    onData(stream, session, callback) {
      const file = path.join(dir, `${Date.now()}-${process.pid}-${n++}.eml`);
      const out = fs.createWriteStream(file);
      stream.pipe(out);
      out.on('finish', () => callback());
      out.on('error', (err) => callback(err));
      stream.on('error', (err) => callback(err));
      void session;
    },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
  } catch (err) {
    if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
    // This folder's catcher (another `pops` on the same state folder) is sent through, as the
    // other embedded services are reused; another folder's would take this folder's mail, and
    // anything else is no SMTP server: both are refused, naming the variable.
    const greeting = await smtpGreeting(port);
    if (greeting?.includes(bannerOf(dir))) {
      log.info({ port }, "this folder's mail catcher already listens on the port; reusing it");
      return { dir, port, close: async () => undefined };
    }
    const what = greeting
      ? `an SMTP server that does not write into ${path.resolve(dir)} (another pops state folder?)`
      : 'something that is not an SMTP server';
    throw new Error(
      `POPS_SMTP_CAPTURE_PORT=${port}: the port is taken by ${what};` +
        ' set POPS_SMTP_CAPTURE_PORT to a free port, or POPS_SMTP_URL',
      { cause: err },
    );
  }
  // After the start, an error is a client's (a worker killed mid-session resets its connection).
  server.removeAllListeners('error');
  server.on('error', (err) => log.debug({ err }, 'mail catcher: a client connection failed'));
  log.info(
    { port, dir },
    'mail catcher listening (POPS_SMTP_URL unset): messages become .eml files',
  );
  return { dir, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** What the catcher of `dir` says in its greeting. */
function bannerOf(dir: string): string {
  return `pops mail catcher for ${path.resolve(dir)}`;
}

/** The greeting of an SMTP server (220) on 127.0.0.1:`port` within a second, else undefined. */
function smtpGreeting(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const done = (greeting: string | undefined) => {
      socket.destroy();
      resolve(greeting);
    };
    socket.setTimeout(1000, () => done(undefined));
    socket.once('data', (chunk: Buffer) => {
      const text = chunk.toString();
      done(text.startsWith('220') ? text : undefined);
    });
    socket.once('error', () => done(undefined));
  });
}

/**
 * The catcher of `pops serve` when POPS_SMTP_URL is unset (campaign mail then goes to it through
 * smtp://127.0.0.1:POPS_SMTP_CAPTURE_PORT); undefined when a real SMTP server is configured.
 */
export async function catcherForServe(
  config: { POPS_SMTP_URL?: string | undefined; POPS_SMTP_CAPTURE_PORT: number },
  stateDirectory: string,
  log: Logger,
): Promise<MailCatcher | undefined> {
  if (config.POPS_SMTP_URL) return undefined;
  return startMailCatcher(path.join(stateDirectory, 'mail'), config.POPS_SMTP_CAPTURE_PORT, log);
}
