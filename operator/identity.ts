// Deterministic disk identity: a unit serial number (SPC-4 §7.8.16, VPD 0x80)
// and a NAA WWN (SPC-4 §7.8.6.6) derived from a seed string. The seed is
// "namespace/name" in `vhba serve` (namespace defaults to "default") and the
// resource UID in the operator, so a disk keeps its identity for its life.
//
//   digest = SHA-256(seed)                       (seed + "#" + n for n ≥ 1 on collision)
//   serial = "VH" + first 18 characters of base32(digest)   (RFC 4648 alphabet, uppercase, no padding)
//   wwn    = "3" + first 15 hex digits of digest            (NAA 3 "locally assigned", SPC-4 §7.8.6.6.2)
//
// Serial: 20 characters, A–Z and 2–7, within the 20-character limit.
// WWN: 16 hex digits; NAA 3 means "locally administered", fitting for names
// with no IEEE company id behind them.
import { createHash } from 'node:crypto';

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (uppercase, no padding) of bytes. */
export function base32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32_ALPHABET[(buffer >> bits) & 31];
    }
  }
  if (bits > 0) out += BASE32_ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

function digestOf(seed: string, attempt: number): Buffer {
  return createHash('sha256').update(attempt === 0 ? seed : `${seed}#${attempt}`).digest();
}

/** The derived serial for a seed; `attempt` > 0 re-derives after a collision. */
export function deriveSerial(seed: string, attempt = 0): string {
  return `VH${base32(digestOf(seed, attempt)).slice(0, 18)}`;
}

/** The derived WWN (16 lowercase hex digits, NAA 3, no 0x) for a seed. */
export function deriveWwn(seed: string, attempt = 0): string {
  return `3${digestOf(seed, attempt).toString('hex').slice(0, 15)}`;
}

/** Upper bound on re-derivations; with 90/60-bit values this is never reached
 * unless someone pins serials to collide on purpose. */
export const MAX_DERIVE_ATTEMPTS = 1000;

/** First derived value (attempt 0, 1, …) not in `taken`; undefined if the
 * budget runs out. Deterministic for the same seed and taken set. */
export function deriveUnique(seed: string, derive: (seed: string, attempt: number) => string, taken: ReadonlySet<string>): string | undefined {
  for (let attempt = 0; attempt < MAX_DERIVE_ATTEMPTS; attempt++) {
    const value = derive(seed, attempt);
    if (!taken.has(value)) return value;
  }
  return undefined;
}
