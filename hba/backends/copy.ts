// Copies a volume image for snapshots and clones, keeping it thin:
//  1. a reflink (FICLONE, via fs.copyFile with COPYFILE_FICLONE_FORCE) where
//     the file system shares extents (btrfs, XFS with reflink, bcachefs);
//  2. otherwise a chunked copy that writes only chunks holding a non-zero
//     byte and leaves the rest as holes, so a sparse source stays sparse.
// Known gap: Node exposes no lseek(SEEK_DATA/SEEK_HOLE) and the native addon
// has no helper for it, so step 2 reads the holes too (the kernel returns
// zero pages without disk I/O); a source with no allocated blocks at all is
// detected from st_blocks and copied as a pure hole.
import { constants } from 'node:fs';
import { copyFile, open, stat, unlink } from 'node:fs/promises';

/** Bytes read per step of the fallback copy. */
export const COPY_CHUNK_BYTES = 1 << 20;
/** Granularity of hole detection: a file-system block. */
export const HOLE_GRANULE_BYTES = 4096;

/** How a copy was made. */
export type CopyMethod = 'reflink' | 'sparse-copy' | 'empty';

function isZero(buf: Buffer, length: number): boolean {
  // Compare 8 bytes at a time, then the tail.
  let i = 0;
  for (; i + 8 <= length; i += 8) if (buf.readBigUInt64LE(i) !== 0n) return false;
  for (; i < length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Copies `src` to the new file `dst` (which must not exist) with its size
 * and data, thin where possible, and fsyncs it. On failure `dst` is removed. */
export async function copyImage(src: string, dst: string): Promise<CopyMethod> {
  try {
    await copyFile(src, dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    const fh = await open(dst, 'r+');
    try { await fh.sync(); } finally { await fh.close(); }
    return 'reflink';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOENT') throw err;
    await unlink(dst).catch(() => undefined); // a failed clone may leave an empty file
  }
  const info = await stat(src);
  const input = await open(src, 'r');
  let output;
  try {
    output = await open(dst, 'wx', 0o600);
  } catch (err) {
    await input.close();
    throw err;
  }
  try {
    let method: CopyMethod = 'empty';
    if (info.blocks > 0) {
      method = 'sparse-copy';
      const buf = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
      for (let offset = 0; offset < info.size; ) {
        const want = Math.min(COPY_CHUNK_BYTES, info.size - offset);
        const { bytesRead } = await input.read(buf, 0, want, offset);
        if (bytesRead === 0) break; // the source shrank under us: the rest stays a hole
        // Write each run of granules holding data; all-zero granules stay holes.
        for (let start = 0; start < bytesRead; ) {
          const end0 = Math.min(start + HOLE_GRANULE_BYTES, bytesRead);
          if (isZero(buf.subarray(start, end0), end0 - start)) { start = end0; continue; }
          let end = end0;
          while (end < bytesRead) {
            const next = Math.min(end + HOLE_GRANULE_BYTES, bytesRead);
            if (isZero(buf.subarray(end, next), next - end)) break;
            end = next;
          }
          await output.write(buf, start, end - start, offset + start);
          start = end;
        }
        offset += bytesRead;
      }
    }
    await output.truncate(info.size);
    await output.sync();
    return method;
  } catch (err) {
    await output.close().catch(() => undefined);
    output = undefined;
    await unlink(dst).catch(() => undefined);
    throw err;
  } finally {
    await output?.close();
    await input.close();
  }
}
