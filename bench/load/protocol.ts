// The commands the bench sends a load generator over IPC, and what comes back.

/** At most this many connections per generator: one source address's share of ports. */
export const MAX_CONNECTIONS_PER_GENERATOR = 5000;
import type { Transport } from './connection.ts';

/** Which topics each connection subscribes to; `index` counts across all generators. */
export type TopicPlan =
  | { kind: 'none' }
  | { kind: 'one'; topic: string }
  | { kind: 'own'; prefix: string }
  | { kind: 'spread'; prefix: string; count: number }
  | { kind: 'all'; prefix: string; count: number };

export type Command =
  | { cmd: 'connect'; args: { transport: Transport; port: number; localAddress: string; token: string; count: number; first: number; topics: TopicPlan; concurrency: number; within: number } }
  | { cmd: 'counters'; args: Record<string, never> }
  | { cmd: 'waitMessages'; args: { total: number; within: number } }
  | { cmd: 'publishOnce'; args: { topic: string; bytes: number } }
  | { cmd: 'pumpStart'; args: { window: number; bytes: number; prefix: string } }
  | { cmd: 'pumpStop'; args: Record<string, never> }
  | { cmd: 'publishAtRate'; args: { perSecond: number; ms: number; bytes: number; prefix: string; topicCount: number } }
  | { cmd: 'latencyStart'; args: Record<string, never> }
  | { cmd: 'latencyStop'; args: Record<string, never> }
  | { cmd: 'pause'; args: { count: number } }
  | { cmd: 'resume'; args: Record<string, never> }
  | { cmd: 'closeAll'; args: { within: number } };

export type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

export interface Counters {
  messages: number;
  acks: number;
  busy: number;
  errors: number;
  closed: number;
  open: number;
  /** process.hrtime.bigint() of the last MESSAGE, as a decimal string. */
  lastMessageAt: string;
}
