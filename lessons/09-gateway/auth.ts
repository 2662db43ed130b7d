// Who may use the gateway: a client proves it holds the shared token in its HELLO.

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

/** True if `given` is the token. */
export function tokenMatches(given: string, token: string): boolean {
  return given === token;
}
