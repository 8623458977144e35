import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PATTERNS } from './api/virtualdisk.ts';
import { base32, deriveSerial, deriveUnique, deriveWwn } from './identity.ts';

describe('base32', () => {
  it('matches RFC 4648 test vectors (without padding)', () => {
    const vectors: [string, string][] = [['', ''], ['f', 'MY'], ['fo', 'MZXQ'], ['foo', 'MZXW6'], ['foob', 'MZXW6YQ'], ['fooba', 'MZXW6YTB'], ['foobar', 'MZXW6YTBOI']];
    for (const [input, output] of vectors) expect(base32(Buffer.from(input))).toBe(output);
  });
});

describe('derived identity', () => {
  it('is deterministic and has the documented shape', () => {
    const serial = deriveSerial('default/disk-a');
    expect(serial).toBe(deriveSerial('default/disk-a'));
    expect(serial).toMatch(/^VH[A-Z2-7]{18}$/);
    expect(new RegExp(PATTERNS.serial).test(serial)).toBe(true);
    const wwn = deriveWwn('default/disk-a');
    expect(wwn).toBe(deriveWwn('default/disk-a'));
    expect(wwn).toMatch(/^3[0-9a-f]{15}$/);
    expect(new RegExp(PATTERNS.wwn).test(wwn)).toBe(true);
  });

  it('follows the documented formula (SHA-256, base32 and hex prefixes)', () => {
    const digest = createHash('sha256').update('ns/x').digest();
    expect(deriveSerial('ns/x')).toBe(`VH${base32(digest).slice(0, 18)}`);
    expect(deriveWwn('ns/x')).toBe(`3${digest.toString('hex').slice(0, 15)}`);
    const retry = createHash('sha256').update('ns/x#2').digest();
    expect(deriveWwn('ns/x', 2)).toBe(`3${retry.toString('hex').slice(0, 15)}`);
  });

  it('differs between seeds and between attempts', () => {
    expect(deriveSerial('default/a')).not.toBe(deriveSerial('default/b'));
    expect(deriveWwn('default/a')).not.toBe(deriveWwn('default/b'));
    expect(deriveSerial('default/a', 1)).not.toBe(deriveSerial('default/a'));
  });

  it('deriveUnique skips taken values deterministically', () => {
    const first = deriveSerial('s');
    const second = deriveSerial('s', 1);
    expect(deriveUnique('s', deriveSerial, new Set())).toBe(first);
    expect(deriveUnique('s', deriveSerial, new Set([first]))).toBe(second);
    expect(deriveUnique('s', () => 'same', new Set(['same']))).toBeUndefined();
  });
});
