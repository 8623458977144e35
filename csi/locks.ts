// Per-key try-locks: one CSI call at a time per volume (or snapshot, or
// name). A second call for a held key does not wait: the caller answers
// ABORTED ("operation pending for volume", CSI spec §Concurrency) and the CO
// retries. In-process only: one controller replica owns a store at a time.

/** A set of held keys; acquire never blocks. */
export class KeyedLocks {
  readonly #held = new Set<string>();

  /** Takes every key or none; returns a release function, or undefined when
   * some key is already held. Duplicate keys are taken once. */
  tryAcquire(keys: readonly string[]): (() => void) | undefined {
    const unique = [...new Set(keys)];
    if (unique.some((k) => this.#held.has(k))) return undefined;
    for (const k of unique) this.#held.add(k);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of unique) this.#held.delete(k);
    };
  }

  /** Whether a key is held (for tests and diagnostics). */
  isHeld(key: string): boolean {
    return this.#held.has(key);
  }
}
