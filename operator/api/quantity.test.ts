import { describe, expect, it } from 'vitest';
import { formatBytes, parseByteQuantity } from './quantity.ts';

describe('parseByteQuantity', () => {
  it.each([
    ['256Mi', 256 * 2 ** 20],
    ['1Gi', 2 ** 30],
    ['10G', 10e9],
    ['1.5Gi', 1.5 * 2 ** 30],
    ['4096', 4096],
    ['1e9', 1e9],
    ['2k', 2000],
    ['0.5Ki', 512],
  ])('%s → %d bytes', (text, bytes) => {
    expect(parseByteQuantity(text)).toEqual({ ok: true, bytes });
  });

  it('accepts a whole number of bytes given as a number', () => {
    expect(parseByteQuantity(1048576)).toEqual({ ok: true, bytes: 1048576 });
  });

  it.each(['', '-1Gi', '1 Gi', '1gi', '1m', '1.5', '0.1Ki', 'Gi', '1GiB', '16Ei'])('rejects %j', (text) => {
    expect(parseByteQuantity(text).ok).toBe(false);
  });

  it('rejects fractional, negative and unsafe numbers and other types', () => {
    expect(parseByteQuantity(1.5).ok).toBe(false);
    expect(parseByteQuantity(-1).ok).toBe(false);
    expect(parseByteQuantity(2 ** 60).ok).toBe(false);
    expect(parseByteQuantity(null).ok).toBe(false);
    expect(parseByteQuantity({}).ok).toBe(false);
  });

  it('explains what is allowed', () => {
    const result = parseByteQuantity('12 parsecs');
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason).toMatch(/allowed: .*Ki, Mi, Gi/);
  });
});

describe('formatBytes', () => {
  it('uses the largest exact binary unit', () => {
    expect(formatBytes(256 * 2 ** 20)).toBe('256Mi');
    expect(formatBytes(2 ** 30)).toBe('1Gi');
    expect(formatBytes(1536)).toBe('1536');
    expect(formatBytes(3 * 1024)).toBe('3Ki');
    expect(formatBytes(0)).toBe('0');
  });
});
