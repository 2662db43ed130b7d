// What the kernel says about a process, read from /proc: the figures do not depend on
// the server reporting on itself, so the four servers are measured the same way.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

function getconf(name: string, fallback: number): number {
  try {
    return Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim()) || fallback;
  } catch {
    return fallback;
  }
}
const TICKS_PER_SECOND = getconf('CLK_TCK', 100);
export const PAGE_BYTES = getconf('PAGESIZE', 4096);

/** Resident set size, in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const match = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** User + system CPU time used so far, in seconds (resolution: one clock tick, 10 ms). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; count fields after its closing paren.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / TICKS_PER_SECOND;
}

/** The kernel's TCP totals for the whole machine (both ends of every loopback connection). */
export function tcpSockstat(): { inuse: number; memBytes: number } {
  const line = readFileSync('/proc/net/sockstat', 'utf8').match(/^TCP: inuse (\d+) orphan \d+ tw \d+ alloc \d+ mem (\d+)/m);
  if (!line) throw new Error('no TCP line in /proc/net/sockstat');
  return { inuse: Number(line[1]), memBytes: Number(line[2]) * PAGE_BYTES };
}
