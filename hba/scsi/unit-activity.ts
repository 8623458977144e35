// What every logical unit keeps about its own commands, whatever serves
// them (an emulated disk, a passthrough device): the commands running now,
// waiters for the moment none is, and I/O counters (SAM-5 §4.6.2 task set,
// seen from the device server).

/** Per-LU I/O counters. */
export interface LogicalUnitStats {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
}

/** Commands running on one LU and what they moved. */
export class UnitActivity {
  /** Commands this LU completed (the JS path); mutated by the LU. */
  readonly stats: LogicalUnitStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0 };
  #inFlight = 0;
  #idleWaiters: (() => void)[] = [];

  /** Commands executing now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Runs `command` counted as in flight until it settles. */
  async track<T>(command: () => Promise<T>): Promise<T> {
    this.#inFlight++;
    try {
      return await command();
    } finally {
      if (--this.#inFlight === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }

  /** Resolves when no command is executing. */
  drain(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** A copy of the counters, plus I/O done elsewhere (the native path). */
  total(external?: LogicalUnitStats): LogicalUnitStats {
    const own = this.stats;
    if (!external) return { ...own };
    return { reads: own.reads + external.reads, writes: own.writes + external.writes, bytesRead: own.bytesRead + external.bytesRead, bytesWritten: own.bytesWritten + external.bytesWritten };
  }
}
