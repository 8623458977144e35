// Loads VirtualDisk manifests from a file or a directory for `vhba serve`.
// A directory contributes its *.yaml, *.yml and *.json files (not recursive;
// dotfiles and other names ignored), in name order. YAML files may hold
// several documents separated by "---"; empty documents are skipped. A JSON
// file holds one object or an array of objects. Every error names the file,
// the document (1-based), the field and what is allowed.
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { validateVirtualDisk } from './validate.ts';
import type { NormalizedVirtualDisk } from './virtualdisk.ts';

/** A valid disk and where it came from. */
export interface LoadedDisk {
  disk: NormalizedVirtualDisk;
  file: string;
  /** 1-based document index within the file. */
  document: number;
}

/** One problem, located. `document` is absent for whole-file problems. */
export interface LoadError {
  file: string;
  document?: number;
  field: string;
  message: string;
}

/** Everything found: the valid disks, and the errors (empty when all is well). */
export interface LoadResult {
  disks: LoadedDisk[];
  errors: LoadError[];
}

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);
/** Manifests are small; refuse anything absurd rather than reading it. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;

/** Formats a LoadError as one line: "file (document N): field: message". */
export function formatLoadError(error: LoadError): string {
  const where = error.document === undefined ? error.file : `${error.file} (document ${error.document})`;
  return `${where}: ${error.field}: ${error.message}`;
}

/** Lists the manifest files of a directory, or the path itself if it is a file. */
export async function listManifestFiles(path: string): Promise<string[]> {
  const info = await stat(path);
  if (!info.isDirectory()) return [path];
  const entries = await readdir(path, { withFileTypes: true });
  const files: string[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith('.') || !MANIFEST_EXTENSIONS.has(extname(entry.name).toLowerCase())) continue;
    const full = join(path, entry.name);
    const isFile = entry.isFile() || (entry.isSymbolicLink() && (await stat(full).catch(() => undefined))?.isFile() === true);
    if (isFile) files.push(full);
  }
  return files.sort();
}

/** Parses one file's text into its documents (as plain values), or errors. */
export function parseManifestText(file: string, text: string): { documents: unknown[]; errors: LoadError[] } {
  if (extname(file).toLowerCase() === '.json') {
    try {
      const value: unknown = JSON.parse(text);
      return { documents: Array.isArray(value) ? value : [value], errors: [] };
    } catch (error) {
      return { documents: [], errors: [{ file, field: '(file)', message: `invalid JSON: ${(error as Error).message}` }] };
    }
  }
  const documents: unknown[] = [];
  const errors: LoadError[] = [];
  const parsed = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
  const list = Array.isArray(parsed) ? parsed : [];
  list.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) errors.push({ file, document: index + 1, field: '(yaml)', message: `invalid YAML: ${e.message.split('\n')[0]}` });
      documents.push(undefined);
      return;
    }
    documents.push(doc.contents === null ? null : doc.toJS({ maxAliasCount: 100 }));
  });
  return { documents, errors };
}

/** Validates the documents of one file (null documents are skipped). */
export function validateDocuments(file: string, documents: unknown[]): LoadResult {
  const result: LoadResult = { disks: [], errors: [] };
  documents.forEach((value, index) => {
    if (value === null || value === undefined) return;
    const checked = validateVirtualDisk(value);
    if (checked.ok) result.disks.push({ disk: checked.disk, file, document: index + 1 });
    else for (const e of checked.errors) result.errors.push({ file, document: index + 1, ...e });
  });
  return result;
}

/** Loads and validates every manifest under `path` (a directory or one file).
 * Duplicate namespace/name pairs are errors naming both places. Never throws
 * for bad input; an unreadable path is reported as an error too. */
export async function loadManifests(path: string): Promise<LoadResult> {
  const result: LoadResult = { disks: [], errors: [] };
  let files: string[];
  try {
    files = await listManifestFiles(path);
  } catch (error) {
    return { disks: [], errors: [{ file: path, field: '(file)', message: `cannot read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` }] };
  }
  for (const file of files) {
    let text: string;
    try {
      const info = await stat(file);
      if (info.size > MAX_FILE_BYTES) {
        result.errors.push({ file, field: '(file)', message: `is ${info.size} bytes; allowed: at most ${MAX_FILE_BYTES}` });
        continue;
      }
      text = await readFile(file, 'utf8');
    } catch (error) {
      result.errors.push({ file, field: '(file)', message: `cannot read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}` });
      continue;
    }
    const parsed = parseManifestText(file, text);
    result.errors.push(...parsed.errors);
    const validated = validateDocuments(file, parsed.documents);
    result.errors.push(...validated.errors);
    result.disks.push(...validated.disks);
  }
  // Duplicate keys: the first occurrence (file order) stays, later ones are errors.
  const seen = new Map<string, LoadedDisk>();
  const unique: LoadedDisk[] = [];
  for (const loaded of result.disks) {
    const first = seen.get(loaded.disk.key);
    if (first === undefined) {
      seen.set(loaded.disk.key, loaded);
      unique.push(loaded);
      continue;
    }
    result.errors.push({
      file: loaded.file,
      document: loaded.document,
      field: 'metadata.name',
      message: `duplicate VirtualDisk ${loaded.disk.key}, also defined in ${first.file} (document ${first.document}); allowed: one manifest per namespace/name`,
    });
  }
  result.disks = unique;
  return result;
}

