/**
 * Names as bytes, as every table stores them: WTF-8 (https://simonsapin.github.io/wtf-8/), which is
 * UTF-8 that also carries lone surrogates (3 bytes each, as any code point
 * from U+0800 to U+FFFF). JavaScript strings are UTF-16 and may hold lone
 * surrogates; UTF-8 would turn every one of them into U+FFFD, so names that
 * differ only in them would share a slot. A well-formed name (nearly every
 * one) is encoded and decoded by the platform's UTF-8 codecs; only a name
 * with a lone surrogate takes the slow path.
 *
 * The length rule is the same everywhere a name is stored: at most NAME_MAX
 * bytes of WTF-8. A name's slot is found from its hash (fnv1a), checked
 * before its bytes.
 */
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The WTF-8 byte length of `s`. */
export function wtf8Length(s: string): number {
  if (s.isWellFormed()) return Buffer.byteLength(s, 'utf8');
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Write `s` as WTF-8 into `out` (long enough: wtf8Length(s)); its length. */
export function encodeWtf8Into(s: string, out: Uint8Array): number {
  if (s.isWellFormed()) return encoder.encodeInto(s, out).written;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      c = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00);
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 0x3f);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    } else if (c < 0x80) {
      out[n++] = c;
    } else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 0x3f);
    } else {
      out[n++] = 0xe0 | (c >> 12); // a lone surrogate too: ED A0..BF xx
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    }
  }
  return n;
}

/** The string whose WTF-8 bytes are `bytes`. */
export function decodeWtf8(bytes: Uint8Array): string {
  try {
    return decoder.decode(bytes);
  } catch {
    // A lone surrogate (or bytes no encoder of ours wrote): decode by hand.
  }
  let s = '';
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    let c: number;
    if (b < 0x80) c = bytes[i++]!;
    else if (b < 0xe0) c = ((b & 0x1f) << 6) | (bytes[i + 1]! & 0x3f), i += 2;
    else if (b < 0xf0) c = ((b & 0x0f) << 12) | ((bytes[i + 1]! & 0x3f) << 6) | (bytes[i + 2]! & 0x3f), i += 3;
    else c = ((b & 0x07) << 18) | ((bytes[i + 1]! & 0x3f) << 12) | ((bytes[i + 2]! & 0x3f) << 6) | (bytes[i + 3]! & 0x3f), i += 4;
    s += String.fromCodePoint(c);
  }
  return s;
}

/** FNV-1a of the first `length` bytes. */
export function fnv1a(bytes: Uint8Array, length: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}
