// One status line that redraws itself on a terminal, one line per step anywhere else.
export class Progress {
  private done_ = 0;
  private readonly started = performance.now();
  private readonly tty = Boolean(process.stderr.isTTY);

  constructor(private readonly total: number) {}

  step(what: string): void {
    this.done_++;
    const elapsed = Math.round((performance.now() - this.started) / 1000);
    const width = 24;
    const filled = Math.round((width * (this.done_ - 1)) / this.total);
    const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${this.done_}/${this.total}  ${what}  (${Math.floor(elapsed / 60)}:${String(elapsed % 60).padStart(2, '0')})`;
    if (this.tty) process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns ?? 80) - 1)}`);
    else process.stderr.write(`${line}\n`);
  }

  /** A line that stays (an error), above the status line. */
  note(text: string): void {
    process.stderr.write(this.tty ? `\r\x1b[2K${text}\n` : `${text}\n`);
  }

  done(): void {
    if (this.tty) process.stderr.write('\r\x1b[2K');
  }
}
