// Assignments persisted in a JSON file (the directory store used by `vhba
// serve`), so a restart keeps every disk's address and identity. Written
// atomically: temp file in the same directory, fsync, rename, fsync of the
// directory; a crash leaves either the old file or the new one.
import { mkdir, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/atomic-file.ts';
import { dirname } from 'node:path';
import { IO_PROFILES } from './api/virtualdisk.ts';
import type { Assignment } from './planner.ts';

/** Version of the file format. */
export const ASSIGNMENTS_FILE_VERSION = 1;

interface AssignmentsFile {
  version: number;
  assignments: Assignment[];
}

function isAssignment(value: unknown): value is Assignment {
  if (typeof value !== 'object' || value === null) return false;
  const a = value as Record<string, unknown>;
  const int = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  return typeof a.key === 'string' && typeof a.vmName === 'string' && typeof a.serial === 'string'
    && typeof a.wwn === 'string' && /^([0-9a-f]{16}([0-9a-f]{16})?)?$/.test(a.wwn) // '': a passthrough disk's device identity
    && IO_PROFILES.includes(a.ioProfile as never) && int(a.controller) && int(a.target) && int(a.lun);
}

/** Reads the assignments; a missing file means none. Throws with the file
 * name and the problem when the file is unreadable or malformed (never guess
 * addresses for disks a guest may already know). */
export async function loadAssignmentsFile(path: string): Promise<Map<string, Assignment>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: invalid JSON (${(error as Error).message}); fix or remove the file`, { cause: error });
  }
  const file = parsed as Partial<AssignmentsFile>;
  if (typeof parsed !== 'object' || parsed === null || file.version !== ASSIGNMENTS_FILE_VERSION || !Array.isArray(file.assignments)) {
    throw new Error(`${path}: not an assignments file of version ${ASSIGNMENTS_FILE_VERSION}`);
  }
  const map = new Map<string, Assignment>();
  file.assignments.forEach((entry, index) => {
    if (!isAssignment(entry)) throw new Error(`${path}: assignments[${index}] is malformed`);
    if (map.has(entry.key)) throw new Error(`${path}: assignments[${index}] repeats key ${entry.key}`);
    map.set(entry.key, entry);
  });
  return map;
}

/** Writes the assignments atomically (in key order, so equal maps give equal files). */
export async function saveAssignmentsFile(path: string, assignments: ReadonlyMap<string, Assignment>): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const sorted = [...assignments.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const body: AssignmentsFile = { version: ASSIGNMENTS_FILE_VERSION, assignments: sorted };
  await writeFileAtomic(path, `${JSON.stringify(body, null, 2)}\n`);
}
