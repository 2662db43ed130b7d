// Who may use the gateway: a client proves it holds the shared token in its HELLO.
import { createHash, timingSafeEqual } from 'node:crypto';

export interface Hello {
  token: string;
  /** The client's name, for logs. */
  client: string;
}

/** The HELLO body (UTF-8 JSON `{"token": "...", "client": "..."}`), or undefined if it is not one. */
export function parseHello(body: Buffer): Hello | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { token, client } = value as Record<string, unknown>;
  if (typeof token !== 'string') return undefined;
  return { token, client: typeof client === 'string' ? client.slice(0, 64) : 'anonymous' };
}

/**
 * True if `given` is the token. `===` stops at the first byte that differs, so how long a
 * wrong guess takes tells an attacker how much of it was right, and a token can be found
 * a byte at a time. timingSafeEqual reads every byte whatever they hold. It needs inputs
 * of one length (and refusing a wrong length early would give the length away), so both
 * sides are hashed to 32 bytes first.
 */
export function tokenMatches(given: string, token: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(token));
}
