// The servers under test, each a separate process started fresh for every measurement.
// All four speak the workbook's frames; the ws peer carries them in WebSocket messages.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import type { Transport } from './load/connection.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const TOKEN = 'bench-token';

export interface ServerSpec {
  name: string;
  label: string;
  transport: Transport;
  entry: string;
  args(settings: ServerSettings): string[];
  /** The scenarios it takes part in (default: all). */
  only?: string[];
  /** Left out of --quick unless asked for by name. */
  fullRunOnly?: boolean;
}

// The gateway's per-IP limits are sized for many clients behind many addresses; a load
// generator is 5,000 clients behind one. Raised here so that the bench measures the work,
// not the limiter. (Every limit still runs: each connection and PUBLISH is still checked.)
const gatewayArgs = ({ heartbeatMs }: ServerSettings) => [
  '--port', '0', '--metrics-port', '0', '--token', TOKEN, '--heartbeat-ms', String(heartbeatMs), '--log-level', 'warn',
  '--connect-burst', '100000', '--connect-per-second', '100000', '--publish-burst', '10000000', '--publish-per-second', '10000000',
];

export const SERVERS: ServerSpec[] = [
  { name: 'gateway', label: 'gateway (solutions/09)', transport: 'tcp', entry: 'solutions/09-gateway/main.ts', args: gatewayArgs },
  { name: 'mine', label: 'yours (lessons/09)', transport: 'tcp', entry: 'lessons/09-gateway/main.ts', args: gatewayArgs },
  { name: 'naive', label: 'naive gateway', transport: 'tcp', entry: 'bench/peers/naive-gateway.ts', args: ({ heartbeatMs }) => ['--port', '0', '--token', TOKEN, '--heartbeat-ms', String(heartbeatMs)] },
  { name: 'ws', label: 'ws pub/sub', transport: 'ws', entry: 'bench/peers/ws-gateway.ts', args: ({ heartbeatMs }) => ['--port', '0', '--token', TOKEN, '--heartbeat-ms', String(heartbeatMs)] },
  // Not a gateway: a server that holds each socket and answers the handshake, nothing
  // else. The idle figure's floor, what Node itself costs per connection.
  { name: 'bare', label: 'bare socket (the floor)', transport: 'tcp', entry: 'bench/peers/bare.ts', args: () => [], only: ['idle'], fullRunOnly: true },
];

export interface RunningServer {
  spec: ServerSpec;
  pid: number;
  port: number;
  /** Stderr so far, for the error message when something goes wrong. */
  stderr(): string;
  stop(): Promise<void>;
}

const buildDir = path.join(root, 'bench', '.build');
const built = new Map<string, Promise<string>>();

/**
 * Each server is built to one JavaScript file first, the way TypeScript is deployed,
 * and run with plain node. Run under tsx instead, every closure the server creates would
 * carry a `name` property (tsx keeps function names), about 250 bytes each: the gateway
 * makes a dozen closures per connection, and the bench would be measuring the loader.
 */
export function build(entry: string): Promise<string> {
  let file = built.get(entry);
  if (!file) {
    const outfile = path.join(buildDir, `${entry.replace(/[/.]/g, '_')}.mjs`);
    file = esbuild
      .build({ entryPoints: [path.join(root, entry)], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'error' })
      .then(() => outfile);
    built.set(entry, file);
  }
  return file;
}

export interface ServerSettings {
  heartbeatMs: number;
  /** Write a V8 CPU profile of each server run here (`npm run bench -- --profile DIR`). */
  profileDir?: string;
}

export async function startServer(spec: ServerSpec, settings: ServerSettings, within = 20_000): Promise<RunningServer> {
  const [main, hook] = await Promise.all([build(spec.entry), build('bench/gc-on-signal.ts')]);
  const profile = settings.profileDir ? ['--cpu-prof', '--cpu-prof-dir', settings.profileDir, '--cpu-prof-name', `${spec.name}-${Date.now()}.cpuprofile`] : [];
  // Logs go nowhere: a pipe nobody reads would fill and stall the server.
  const child: ChildProcess = spawn(process.execPath, ['--expose-gc', ...profile, '--import', hook, main, ...spec.args(settings)], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  const stop = async () => {
    // A profiled server must exit by itself to write its profile: ask, then insist.
    if (settings.profileDir && running()) {
      process.kill(child.pid!, 'SIGINT');
      const timer = setTimeout(() => running() && process.kill(child.pid!, 'SIGKILL'), 15_000);
      await closed;
      clearTimeout(timer);
    }
    if (running()) process.kill(child.pid!, 'SIGKILL');
    await closed;
  };
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${spec.name} did not say where it listens within ${within} ms: ${stderr.slice(-300)}`)), within);
    const look = () => {
      const match = stderr.match(/on 127\.0\.0\.1:(\d+)/);
      if (match) {
        clearTimeout(timer);
        child.stderr!.off('data', look);
        resolve(Number(match[1]));
      }
    };
    child.stderr!.on('data', look);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${spec.name} exited with code ${code}: ${stderr.slice(-300)}`));
    });
  }).catch(async (err) => {
    await stop();
    throw err;
  });
  return { spec, pid: child.pid!, port, stderr: () => stderr, stop };
}
