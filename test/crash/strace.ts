// Reads `strace -f -y` output of the engine: which writes reached which
// descriptor of the backing file (and at what offset), and where fdatasync /
// fsync happened. Handles the "<unfinished ...>" split lines of -f.

/** One traced write to the backing file. */
export interface TracedWrite { line: number; fd: number; offset: number; rwfSync: boolean }
/** One traced fdatasync/fsync of the backing file. */
export interface TracedSync { line: number; fd: number; call: string }

/** Parses the trace; only calls on descriptors whose -y path is `path`. */
export function parseTrace(text: string, path: string): { writes: TracedWrite[]; syncs: TracedSync[] } {
  const writes: TracedWrite[] = [];
  const syncs: TracedSync[] = [];
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const m = /^\d+\s+(pwrite64|pwritev2|pwritev|fdatasync|fsync)\((\d+)<([^>]*)>(.*)$/.exec(raw);
    if (!m || m[3] !== path) continue;
    const [, call, fdText] = m;
    const rest = m[4]!.replace(/ <unfinished \.\.\.>$/, '').replace(/\)\s+=.*$/, '');
    const fd = Number(fdText);
    if (call === 'fdatasync' || call === 'fsync') { syncs.push({ line: i, fd, call }); continue; }
    if (call === 'pwritev2') {
      const a = /, (\d+), ([\w|]+)$/.exec(rest);
      if (a) writes.push({ line: i, fd, offset: Number(a[1]), rwfSync: /RWF_D?SYNC/.test(a[2]!) });
    } else {
      const a = /, (\d+)$/.exec(rest);
      if (a) writes.push({ line: i, fd, offset: Number(a[1]), rwfSync: false });
    }
  }
  return { writes, syncs };
}
