// The backing files both systems serve: raw images on tmpfs (/dev/shm), filled
// with pseudo-random data so reads move real bytes and nothing is sparse.
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Bytes the kernel says can still be allocated (MemAvailable). */
export function memAvailableBytes(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Creates `count` files of `sizeBytes` under `dir` (on tmpfs); returns their paths.
 * Throws, naming the shortfall, when tmpfs or memory cannot hold them. */
export function createBackingFiles(dir: string, count: number, sizeBytes: number): string[] {
  mkdirSync(dir, { recursive: true });
  const need = count * sizeBytes;
  const fs = statfsSync(dir);
  const free = Number(fs.bavail) * Number(fs.bsize);
  if (need > free) throw new Error(`${dir}: ${count} × ${sizeBytes} bytes needed, ${free} free on its filesystem`);
  const avail = memAvailableBytes();
  if (need + (1 << 30) > avail) throw new Error(`${count} files of ${sizeBytes} bytes need ${need} bytes of RAM plus 1 GiB; MemAvailable is ${avail}`);
  const chunk = Buffer.alloc(4 << 20);
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    const path = join(dir, `lun${String(i).padStart(2, '0')}.raw`);
    const fd = openSync(path, 'w', 0o600);
    try {
      for (let off = 0; off < sizeBytes; off += chunk.length) {
        randomFillSync(chunk);
        const n = Math.min(chunk.length, sizeBytes - off);
        let done = 0;
        while (done < n) done += writeSync(fd, chunk, done, n - done, off + done);
      }
    } finally {
      closeSync(fd);
    }
    paths.push(path);
  }
  return paths;
}

/** Removes the bench's tmpfs directory. */
export function removeBackingFiles(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
