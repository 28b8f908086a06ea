/** A one-line progress bar for a TTY: step, percent, bytes, rate and ETA. */
export class ProgressBar {
  readonly #write: (t: string) => void;
  #step = '';
  #started = Date.now();
  #last = 0;

  constructor(write: (t: string) => void) {
    this.#write = write;
  }

  step(name: string): void {
    if (name === this.#step) return;
    if (this.#step) this.#write('\n');
    this.#step = name;
    this.#started = Date.now();
    this.#write(`${name}...`);
  }

  update(done: number, total: number): void {
    const now = Date.now();
    if (now - this.#last < 200 && done < total) return;
    this.#last = now;
    const secs = Math.max((now - this.#started) / 1000, 0.001);
    const rate = done / secs;
    const pct = total > 0 ? Math.min(100, (done / total) * 100) : 0;
    const eta = rate > 0 && total > done ? (total - done) / rate : 0;
    const width = 24;
    const fill = Math.round((pct / 100) * width);
    this.#write(
      `\r${this.#step} [${'#'.repeat(fill)}${' '.repeat(width - fill)}] ${pct.toFixed(0).padStart(3)}% ${formatBytes(done)}/${formatBytes(total)} ${formatBytes(rate)}/s ETA ${eta.toFixed(0)}s   `,
    );
  }

  end(): void {
    if (this.#step) this.#write('\n');
    this.#step = '';
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
