// Where the controller and the node keep their state so it survives a
// restart. A RecordStore holds JSON records by id; in a cluster it would be
// backed by the Kubernetes API, outside one by a directory written
// atomically: temp file, fsync, rename, fsync of the directory. File names
// are the SHA-256 of the id, so no id (which arrives in requests) is ever
// joined into a path.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir, writeFileAtomic } from '../lib/atomic-file.ts';

/** Records of one kind, keyed by id. Every record carries its own id. */
export interface RecordStore<T extends { id: string }> {
  get(id: string): Promise<T | undefined>;
  /** Creates or replaces; durable when the promise resolves. */
  put(record: T): Promise<void>;
  /** Absent → OK. */
  delete(id: string): Promise<void>;
  /** Every record, sorted by id (stable order for paging). */
  list(): Promise<T[]>;
}

/** A store in memory, for tests. */
export class MemoryStore<T extends { id: string }> implements RecordStore<T> {
  readonly #records = new Map<string, T>();
  async get(id: string) { const r = this.#records.get(id); return r && structuredClone(r); }
  async put(record: T) { this.#records.set(record.id, structuredClone(record)); }
  async delete(id: string) { this.#records.delete(id); }
  async list() { return [...this.#records.values()].map((r) => structuredClone(r)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)); }
}

/** A directory of `<sha256(id)>.json` files, cached in memory. One writer
 * process per directory (the plugin is the only writer of its state). */
export class DirectoryStore<T extends { id: string }> implements RecordStore<T> {
  readonly dir: string;
  readonly #cache = new Map<string, T>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Opens (creating 0700) and loads every record; leftover temp files from a
   * crash are removed; unreadable records are reported, not ignored. */
  static async open<T extends { id: string }>(dir: string): Promise<DirectoryStore<T>> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new DirectoryStore<T>(dir);
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (name.includes('.tmp-')) { await unlink(path).catch(() => undefined); continue; }
      if (!/^[0-9a-f]{64}\.json$/.test(name)) continue;
      let record: T;
      try {
        record = JSON.parse(await readFile(path, 'utf8')) as T;
      } catch (err) {
        throw new Error(`state file ${path} is unreadable (${(err as Error).message}); restore it from backup or remove it`, { cause: err });
      }
      if (typeof record?.id !== 'string' || DirectoryStore.fileName(record.id) !== name) {
        throw new Error(`state file ${path} does not hold the record its name promises; remove it`);
      }
      store.#cache.set(record.id, record);
    }
    return store;
  }

  /** The file name of a record id. */
  static fileName(id: string): string {
    return `${createHash('sha256').update(id).digest('hex')}.json`;
  }

  async get(id: string) { const r = this.#cache.get(id); return r && structuredClone(r); }

  async put(record: T) {
    const copy = structuredClone(record);
    await writeFileAtomic(join(this.dir, DirectoryStore.fileName(record.id)), `${JSON.stringify(copy, null, 1)}\n`);
    this.#cache.set(record.id, copy);
  }

  async delete(id: string) {
    try {
      await unlink(join(this.dir, DirectoryStore.fileName(id)));
      await syncDir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    this.#cache.delete(id);
  }

  async list() {
    return [...this.#cache.values()].map((r) => structuredClone(r)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}
