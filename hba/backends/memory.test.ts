import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from './memory.ts';

describe('MemoryBackend', () => {
  it('behaves like a flat buffer under random writes, discards and zeroing', async () => {
    const size = 300_000; // not a multiple of the chunk size
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom('write', 'discard', 'zero'), fc.integer({ min: 0, max: size }), fc.integer({ min: 0, max: 150_000 }), fc.integer({ min: 1, max: 255 })), { maxLength: 12 }),
        async (ops) => {
          const b = new MemoryBackend(size);
          const model = Buffer.alloc(size);
          for (const [op, offset, rawLength, value] of ops) {
            const length = Math.min(rawLength, size - offset);
            if (op === 'write') {
              await b.write(offset, Buffer.alloc(length, value), false);
              model.fill(value, offset, offset + length);
            } else {
              await (op === 'discard' ? b.discard(offset, length) : b.writeZeroes(offset, length));
              model.fill(0, offset, offset + length);
            }
          }
          expect((await b.read(0, size)).equals(model)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('is sparse: a huge disk costs nothing until written', async () => {
    const b = new MemoryBackend(2 ** 50);
    await b.write(2 ** 49, Buffer.alloc(10, 1), true);
    expect(b.allocatedBytes()).toBe(64 * 1024);
    await b.discard(0, 2 ** 50);
    expect(b.allocatedBytes()).toBe(0);
    expect(b.fuaWrites).toBe(1);
  });

  it('shrinking drops data beyond the new end', async () => {
    const b = new MemoryBackend(200_000);
    await b.write(100_000, Buffer.alloc(1000, 9), false);
    await b.resize(100_500);
    await b.resize(200_000);
    const back = await b.read(100_000, 1000);
    expect(back.subarray(0, 500).every((x) => x === 9)).toBe(true);
    expect(back.subarray(500).every((x) => x === 0)).toBe(true);
  });

  it('checks ranges and injected failures', async () => {
    const b = new MemoryBackend(1000);
    await expect(b.read(999, 2)).rejects.toThrow(RangeError);
    b.failOn('flush');
    await expect(b.flush()).rejects.toThrow(/injected/);
    b.heal();
    await b.flush();
    expect(b.flushes).toBe(1);
  });
});
