// A lesson's entry point (main.ts) run as a real child process, for the tests that send
// it signals. It runs under tsx with the workbook's target hooks, from the tree vitest
// resolved the lesson to, and records its output; the test decides what to wait for.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from '../targets/resolve.ts';
import { eventually } from './eventually.ts';
import { fail } from './teach.ts';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface EntryProcess {
  pid: number;
  /** Waits for a line of stdout that matches `pattern`; returns its first group as a number. */
  port(pattern: RegExp, what: string, within?: number): Promise<number>;
  stdout(): string;
  stderr(): string;
  exited(): ChildExit | undefined;
  waitExit(within: number, what: string): Promise<ChildExit>;
  /** SIGKILL by PID if still running; resolves once its pipes are closed. */
  kill(): Promise<void>;
}

/**
 * The file behind `#target/<lesson>/main.ts` in this test run (lessons/, solutions/,
 * WORKBOOK_TARGET or a catalog's patched copy), found the way vitest resolves it: Vite's
 * `?url` import gives the path without running the module.
 */
export async function entryUnderTest(spec: string): Promise<string> {
  const url = ((await import(/* @vite-ignore */ `${spec}?url`)) as { default: string }).default.split('?')[0]!;
  return url.startsWith('/@fs/') ? url.slice('/@fs'.length) : path.join(projectRoot, url);
}

/** Starts `main` with `args` and extra environment; the child sees the same target choice. */
export function spawnEntry(main: string, env: Record<string, string>, args: string[] = []): EntryProcess {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--import', './runtime/targets/register.ts', main, ...args], {
    cwd: projectRoot,
    env: { ...process.env, WORKBOOK_TARGET: path.dirname(path.dirname(main)), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let exit: ChildExit | undefined;
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('exit', (code, signal) => (exit = { code, signal }));
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return {
    pid: child.pid!,
    port: (pattern, what, within = 5000) =>
      eventually(() => {
        const m = out.match(pattern);
        if (m) return Number(m[1]);
        fail('The entry point did not start.', {
          observed: `stdout: ${JSON.stringify(out.slice(-500))}; stderr: ${JSON.stringify(err.slice(-500))}${exit ? `; exited with code ${exit.code}` : ''}`,
          expected: `${what} on stdout within ${within} ms`,
          idea: 'main.ts starts the server and says where it listens',
        });
      }, { within, every: 10 }),
    stdout: () => out,
    stderr: () => err,
    exited: () => exit,
    async waitExit(within, what) {
      await eventually(() => {
        if (exit) return;
        fail(`The process had not exited ${within} ms after the signal.`, {
          observed: `still running; stderr: ${JSON.stringify(err.slice(-300))}`,
          expected: what,
          idea: "a process exits by itself only when nothing is left open: a server, a socket or a ref'ed timer keeps it alive",
        });
      }, { within });
      return exit!;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await closed;
    },
  };
}
