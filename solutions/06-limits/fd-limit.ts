// How many client connections this process can afford. Every socket is a file
// descriptor, and the kernel refuses a process more descriptors than its "Max open
// files" soft limit. Past that, accept() fails with EMFILE and libuv closes waiting
// clients without a word (see the README), so the server must stop admitting well
// before the limit, while it can still say BUSY.
import { readdirSync, readFileSync } from 'node:fs';

/** The soft "Max open files" limit in /proc/<pid>/limits text; Infinity if unlimited, undefined if absent. */
export function softOpenFileLimit(limits: string): number | undefined {
  const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
  if (!line) return undefined;
  // Columns: the name (three words), the soft limit, the hard limit, the unit. The soft
  // limit is the one the kernel enforces now.
  const soft = line.trim().split(/\s+/)[3];
  if (soft === 'unlimited') return Infinity;
  const n = Number(soft);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

/**
 * Client connections affordable under `limits` when `openFds` descriptors are already in
 * use (stdio, libuv's epoll and spare fd, the listener, log files, ...). Infinity when
 * there is no limit to respect.
 */
export function connectionBudget(limits: string, openFds: number): number {
  const soft = softOpenFileLimit(limits);
  if (soft === undefined || soft === Infinity) return Infinity;
  // What the process will open later also needs descriptors: outbound connections to a
  // database or another service, files, DNS lookups. Keep a tenth of the limit (at least
  // 32) for them, so the cap refuses clients before the kernel does.
  const reserve = Math.max(32, Math.ceil(soft * 0.1));
  return Math.max(0, soft - openFds - reserve);
}

/** connectionBudget() for this process, now. Infinity where /proc is not available. */
export function readConnectionBudget(): number {
  let limits: string;
  let open: number;
  try {
    limits = readFileSync('/proc/self/limits', 'utf8');
    open = readdirSync('/proc/self/fd').length;
  } catch {
    return Infinity;
  }
  return connectionBudget(limits, open);
}
