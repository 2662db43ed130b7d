// A redis-server of our own (Debian's package) on a free loopback port, for the tests
// and the cross-node bench. Redis' `--port 0` means "no TCP at all", so a free port is
// found first.
import { spawn } from 'node:child_process';
import net from 'node:net';

export async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface RedisServer {
  port: number;
  /** Signals it (by its PID) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startRedisServer(port: number, within = 10_000): Promise<RedisServer> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(child.pid, signal);
    await exited;
  };
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server was not ready within ${within} ms: ${out.slice(-300)}`)), within);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`redis-server did not start (${err.message}): install it with apt-get install redis-server (.ci/run does)`));
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
  }).catch(async (err) => {
    await stop('SIGKILL');
    throw err;
  });
  return { port, stop };
}
