// The command line both peers take: the same three settings the bench gives every server.
import { parseArgs } from 'node:util';

export function peerFlags(): { port: number; token: string; heartbeatMs: number } {
  const { values: flags } = parseArgs({
    args: process.argv.slice(2),
    options: {
      port: { type: 'string', default: '0' },
      token: { type: 'string', default: 'dev-token' },
      'heartbeat-ms': { type: 'string', default: '5000' },
    },
  });
  const whole = (name: string, text: string) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} must be a whole number, not "${text}"`);
    return value;
  };
  return { port: whole('port', flags.port), token: flags.token, heartbeatMs: whole('heartbeat-ms', flags['heartbeat-ms']) };
}
