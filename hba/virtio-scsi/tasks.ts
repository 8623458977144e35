// The task set of one controller: every SCSI command between "popped from a
// request queue" and "response written", so task management (virtio 1.2
// §5.6.6.2, SAM-5 §7) can find, wait for and count them.
import type { ScsiCommand, ScsiResult } from '../scsi/types.ts';

/** What the transport needs from one SCSI target (hba/scsi's ScsiTarget,
 * adapted by the engine). Nothing here knows about virtio. */
export interface TargetPort {
  /** Runs one command on a LUN of this target (absent LUNs are the target's to answer). */
  execute(lun: number, cmd: ScsiCommand): Promise<ScsiResult>;
  /** Whether the LUN exists (for task management's INCORRECT_LUN). */
  hasLun(lun: number): boolean;
  /** LOGICAL UNIT RESET (SAM-5 §7.7): reset the LU and raise its reset unit attention. */
  resetLun(lun: number): void;
  /** I_T NEXUS RESET (SAM-5 §7.6): unit attention on every LU of the target. */
  resetNexus(): void;
}

/** Looks a target up by its number (0-255); undefined when absent. */
export type TargetLookup = (target: number) => TargetPort | undefined;

/** One command in flight. */
export interface Task {
  queue: number;
  head: number;
  target: number;
  lun: number;
  tag: bigint;
  /** Resolves when the command's response has been written (or dropped). */
  done: Promise<void>;
}

/** The in-flight tasks, with waits for task management. */
export class TaskSet {
  readonly #tasks = new Set<Task>();

  /** Registers a task; `finish` must be called exactly once when it is done. */
  add(fields: Omit<Task, 'done'>): { task: Task; finish: () => void } {
    let finish!: () => void;
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const task: Task = { ...fields, done };
    this.#tasks.add(task);
    return {
      task,
      finish: () => {
        this.#tasks.delete(task);
        finish();
      },
    };
  }

  /** Tasks matching a filter (target, optional lun, optional tag, optional queue). */
  find(filter: { target?: number; lun?: number; tag?: bigint; queue?: number }): Task[] {
    const out: Task[] = [];
    for (const t of this.#tasks) {
      if (filter.target !== undefined && t.target !== filter.target) continue;
      if (filter.lun !== undefined && t.lun !== filter.lun) continue;
      if (filter.tag !== undefined && t.tag !== filter.tag) continue;
      if (filter.queue !== undefined && t.queue !== filter.queue) continue;
      out.push(t);
    }
    return out;
  }

  /** Resolves when all the given tasks are done. */
  async waitFor(tasks: Task[]): Promise<void> {
    await Promise.all(tasks.map((t) => t.done));
  }

  /** Number of tasks in flight. */
  get size(): number {
    return this.#tasks.size;
  }
}
