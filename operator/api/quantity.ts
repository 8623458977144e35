// Kubernetes resource quantities ("256Mi", "1Gi", "10G", "1.5Gi", "1e9") as a
// whole number of bytes. The grammar is the one of k8s.io/apimachinery
// resource.Quantity, restricted to what makes sense for a disk size: no sign,
// no sub-unit suffixes (m, u, n), and the result must be a whole number of
// bytes that fits in Number.MAX_SAFE_INTEGER (the engine counts bytes in
// JavaScript numbers).

/** Binary (IEC) and decimal (SI) suffixes and their multipliers. */
const SUFFIX_MULTIPLIERS: Readonly<Record<string, bigint>> = {
  '': 1n,
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
  k: 10n ** 3n,
  M: 10n ** 6n,
  G: 10n ** 9n,
  T: 10n ** 12n,
  P: 10n ** 15n,
  E: 10n ** 18n,
};

/** Human text listing the accepted suffixes, for error messages. */
export const QUANTITY_SUFFIXES_TEXT = 'Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024), k, M, G, T, P, E (powers of 1000) or e<N>';

const QUANTITY_PATTERN = /^([0-9]{1,30})(?:\.([0-9]{1,30}))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE][0-9]{1,2})?$/;

/** The result of parsing a quantity: bytes, or why it is not one. */
export type QuantityParse = { ok: true; bytes: number } | { ok: false; reason: string };

/** Parses a capacity quantity (string such as "256Mi", or a non-negative
 * integer number of bytes) into bytes. Never throws. */
export function parseByteQuantity(value: unknown): QuantityParse {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      return { ok: false, reason: `a number must be a whole, non-negative count of bytes up to ${Number.MAX_SAFE_INTEGER}` };
    }
    return { ok: true, bytes: value };
  }
  if (typeof value !== 'string') {
    return { ok: false, reason: 'must be a quantity string such as "256Mi", "1Gi" or "10G"' };
  }
  const match = QUANTITY_PATTERN.exec(value);
  if (match === null) {
    return {
      ok: false,
      reason: `"${value}" is not a quantity; allowed: digits with an optional fraction and suffix ${QUANTITY_SUFFIXES_TEXT}`,
    };
  }
  const [, whole = '0', fraction = '', suffix = ''] = match;
  let multiplier: bigint;
  if (/^[eE][0-9]+$/.test(suffix)) {
    multiplier = 10n ** BigInt(suffix.slice(1));
  } else {
    const known = SUFFIX_MULTIPLIERS[suffix];
    if (known === undefined) return { ok: false, reason: `unknown suffix "${suffix}"` };
    multiplier = known;
  }
  // value = (whole + fraction / 10^len) * multiplier, computed exactly.
  const scale = 10n ** BigInt(fraction.length);
  const numerator = (BigInt(whole) * scale + BigInt(fraction === '' ? '0' : fraction)) * multiplier;
  if (numerator % scale !== 0n) {
    return { ok: false, reason: `"${value}" is not a whole number of bytes` };
  }
  const bytes = numerator / scale;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { ok: false, reason: `"${value}" exceeds the largest supported size (${Number.MAX_SAFE_INTEGER} bytes)` };
  }
  return { ok: true, bytes: Number(bytes) };
}

/** Formats bytes for people: the largest binary unit that divides it exactly,
 * e.g. 268435456 → "256Mi", 1000 → "1000". */
export function formatBytes(bytes: number): string {
  const units = ['Ei', 'Pi', 'Ti', 'Gi', 'Mi', 'Ki'] as const;
  for (const unit of units) {
    const multiplier = SUFFIX_MULTIPLIERS[unit] ?? 1n;
    const big = BigInt(bytes);
    if (big !== 0n && big % multiplier === 0n) return `${big / multiplier}${unit}`;
  }
  return String(bytes);
}
