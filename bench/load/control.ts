// The bench's side of a load generator: fork it, send it commands, end it.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Command, Counters, Reply } from './protocol.ts';

const GENERATOR = fileURLToPath(new URL('./generator.ts', import.meta.url));

type Args<K extends Command['cmd']> = Extract<Command, { cmd: K }>['args'];

export class Generator {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();

  /** `sourceAddress`: this generator's own 127.0.0.N, so its ports never run short. */
  constructor(readonly sourceAddress: string) {
    this.child = fork(GENERATOR, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (reply.ok) waiter?.resolve(reply.value);
      else waiter?.reject(new Error(reply.error));
    });
    this.child.once('exit', (code, signal) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`load generator exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  call<K extends Command['cmd']>(cmd: K, args: Args<K>): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, cmd, args });
    });
  }

  counters(): Promise<Counters> {
    return this.call('counters', {}) as Promise<Counters>;
  }

  /** Disconnects the IPC channel (the generator exits on it), then kills by PID if needed. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }
}
