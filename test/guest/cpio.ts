// A writer for the "newc" cpio format (the one the Linux kernel unpacks as
// initramfs: Documentation/driver-api/early-userspace/buffer-format.rst).
// The harness appends such an archive, uncompressed, to the base initrd to add
// per-test files such as /test.sh.

/** One file for the guest's initramfs. Parent directories are created (0755). */
export interface CpioFile {
  /** Absolute path in the guest, e.g. `/test.sh`. */
  readonly path: string;
  readonly content: string | Uint8Array;
  /** Permission bits; 0o755 when absent (scripts can be run directly). */
  readonly mode?: number;
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const TRAILER = 'TRAILER!!!';

/** Padding that brings `length` up to a multiple of 4 (newc alignment). */
export function padTo4(length: number): number {
  return (4 - (length % 4)) % 4;
}

/** Validates a guest path: absolute, normalised, no NUL, no `.`/`..` parts. */
export function checkGuestPath(path: string): string {
  if (!path.startsWith('/') || path.includes('\0') || path.endsWith('/')) {
    throw new Error(`cpio: guest path must be absolute and name a file: ${JSON.stringify(path)}`);
  }
  const parts = path.slice(1).split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new Error(`cpio: guest path must be normalised: ${JSON.stringify(path)}`);
  }
  return path.slice(1);
}

function header(ino: number, mode: number, fileSize: number, nameSize: number): string {
  // magic, then 13 fields of 8 hex digits: ino mode uid gid nlink mtime filesize
  // devmajor devminor rdevmajor rdevminor namesize check
  const fields = [ino, mode, 0, 0, 1, 0, fileSize, 0, 0, 0, 0, nameSize, 0];
  return '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
}

function entry(ino: number, name: string, mode: number, data: Uint8Array): Buffer {
  const nameBytes = Buffer.from(name + '\0', 'utf8');
  const head = Buffer.from(header(ino, mode, data.length, nameBytes.length), 'ascii');
  const namePad = padTo4(head.length + nameBytes.length);
  return Buffer.concat([head, nameBytes, Buffer.alloc(namePad), data, Buffer.alloc(padTo4(data.length))]);
}

/** Builds an uncompressed newc archive holding `files` (and their parent directories). */
export function buildCpio(files: readonly CpioFile[]): Buffer {
  const parts: Buffer[] = [];
  const directories = new Set<string>();
  let ino = 1;
  for (const file of files) {
    const name = checkGuestPath(file.path);
    const segments = name.split('/');
    for (let i = 1; i < segments.length; i++) {
      const dir = segments.slice(0, i).join('/');
      if (!directories.has(dir)) {
        directories.add(dir);
        parts.push(entry(ino++, dir, S_IFDIR | 0o755, new Uint8Array()));
      }
    }
    const data = typeof file.content === 'string' ? Buffer.from(file.content, 'utf8') : file.content;
    const mode = (file.mode ?? 0o755) & 0o7777;
    parts.push(entry(ino++, name, S_IFREG | mode, data));
  }
  parts.push(entry(0, TRAILER, 0, new Uint8Array()));
  return Buffer.concat(parts);
}
