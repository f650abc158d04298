/*
 * Ledger verification page: checks a document against its receipt, in the browser, offline.
 *
 * This is a JavaScript twin of the Python verifier, rule for rule and message for message:
 *
 *   ledger/receipt.py       tlog-proof@v1 parse + verify_receipt, the time bound
 *   ledger/note.py          C2SP signed notes, key IDs, vkeys, type 0x01 and 0x04 signatures
 *   ledger/checkpoint.py    C2SP tlog-checkpoint bodies
 *   ledger/policy.py        C2SP tlog-policy parse + evaluate (groups, quorum, f = n - k)
 *   ledger/merkle/proof.py  RFC 9162 section 2.1.3.2 inclusion verification
 *   ledger/eod/trail.py     verify_trail over a ledger-eod-trail/v2 bundle, with canonical.py,
 *                           events.py, pki.py, records.py, timing.py, calendar.py,
 *                           holidays.py, paths.py and the whole of rules.py: one set of
 *                           rules, tested against the Python on the same valid and broken
 *                           trails (tests/web/test_verify_trail.py)
 *
 * The English text of every error is the Python error's diagnostics(), character for character,
 * so tests/web/test_verify_page.py can feed the same receipts to both verifiers and compare the
 * outcome (valid, or malformed/verification and the reason). When a rule changes in Python, it
 * changes here, and that test says so.
 *
 * What the page does with the user's files: the document is read into memory and hashed with
 * crypto.subtle.digest; nothing else ever sees it. The one network request the page may make is
 * GET /v1/policy (same origin, and only when served over http(s)) to pre-fill the trust policy.
 * Every Ed25519 check is crypto.subtle.verify({name: "Ed25519"}); no cryptography is hand-rolled.
 *
 * Web Crypto needs a secure context: https, http://localhost or 127.0.0.1, or a file:// page. A
 * node served over plain http on another address gets no crypto.subtle, and the page says so.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------------------ constants

  const RECEIPT_HEADER = "c2sp.org/tlog-proof@v1";
  const MAX_PROOF_HASHES = 64;
  const MAX_NOTE_SIZE = 1 << 20;
  const MAX_RECEIPT_SIZE = MAX_NOTE_SIZE + 64 * 1024;
  const MAX_EXTRA = 16 * 1024;
  const MAX_SIGNATURES = 100;
  const MAX_EXTENSIONS = 64;
  const MAX_TREE_SIZE = (1n << 64n) - 1n;
  const MAX_TIMESTAMP = (1n << 63n) - 1n;
  const MAX_POLICY_ENTRIES = 1024;
  const MAX_POLICY_SIZE = 1 << 20;
  const HASH_SIZE = 32;
  const PUBLIC_KEY_SIZE = 32;
  const SIGNATURE_SIZE = 64;
  const KEY_ID_SIZE = 4;
  const TIMESTAMP_SIZE = 8;
  /** c2sp.org/signed-note: U+2014 EM DASH and a space open every signature line. */
  const SIGNATURE_LINE_PREFIX = "\u2014 ";
  const SIG_TYPE_ED25519 = 0x01;
  const SIG_TYPE_COSIGNATURE_V1 = 0x04;
  /** c2sp.org/tlog-cosignature: the domain separation of type-0x04 signed messages. */
  const COSIGNATURE_V1_HEADER = "cosignature/v1\n";
  /** RFC 9162 section 2.1.1 domain-separation prefixes (ledger/merkle/hashing.py). */
  const LEAF_HASH_PREFIX = 0x00;
  const NODE_HASH_PREFIX = 0x01;
  const NONE = "none";
  /** datetime.fromtimestamp(..., UTC) fails past 9999-12-31T23:59:59Z; the CLI then prints seconds. */
  const MAX_ISO_SECONDS = 253402300799n;

  const DECIMAL = /^(0|[1-9][0-9]*)$/;
  const HEX_KEY_ID = /^[0-9a-f]{8}$/;
  const BASE64_SHAPE = /^[A-Za-z0-9+/]*={0,2}$/;
  const NOTE_FORBIDDEN_CONTROL = /[\x00-\x09\x0b-\x1f\x7f]/;
  const POLICY_FORBIDDEN = /[\x00-\x08\x0b-\x1f\x7f]/;
  const POLICY_SPLIT = /[ \t]+/;
  const POLICY_THRESHOLD = /^[1-9][0-9]{0,5}$/;
  // Python's str.isspace(), which ledger.crypto.check_key_name uses (JavaScript's \s differs:
  // it has U+FEFF and lacks U+0085 and U+001C-U+001F).
  const PY_SPACE = /[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

  // ----------------------------------------------------------------------- errors and text

  /**
   * The messages of every error, by code. "en" is the Python message verbatim; {x} is a
   * parameter. A parameter is a string, a nested LedgerError (rendered in the same language)
   * or {t: term} (a translated term from TERMS).
   */
  const MESSAGES = {
    // receipt.py
    receipt_too_large: { en: "receipt is too large", pl: "pokwitowanie jest za duże" },
    receipt_not_utf8: { en: "receipt is not valid UTF-8", pl: "pokwitowanie nie jest poprawnym tekstem UTF-8" },
    receipt_truncated: { en: "receipt is truncated", pl: "pokwitowanie jest ucięte" },
    receipt_header: {
      en: "receipt does not start with 'c2sp.org/tlog-proof@v1'",
      pl: "pokwitowanie nie zaczyna się od 'c2sp.org/tlog-proof@v1'",
    },
    receipt_no_index: { en: "receipt lacks its 'index' line", pl: "w pokwitowaniu brakuje wiersza 'index'" },
    receipt_too_many_hashes: {
      en: "receipt has more than 64 proof hashes",
      pl: "pokwitowanie ma więcej niż 64 skróty dowodu",
    },
    proof_hash_size: { en: "every proof hash must be 32 bytes", pl: "każdy skrót dowodu musi mieć 32 bajty" },
    extra_too_large: { en: "receipt extra data is too large", pl: "dane dodatkowe pokwitowania są za duże" },
    decimal_syntax: {
      en: "{what} is not a decimal number without leading zeroes",
      pl: "{what}: to nie jest liczba dziesiętna bez zer wiodących",
    },
    decimal_range: { en: "{what} is out of range", pl: "{what}: wartość poza zakresem" },
    b64_invalid: { en: "{what} is not valid base64", pl: "{what}: niepoprawne base64" },
    b64_noncanonical: { en: "{what} is not canonical base64", pl: "{what}: niekanoniczne base64" },
    no_quorum_policy: {
      en: "policy requires no cosignatures, so no time can be bounded",
      pl: "polityka nie wymaga kontrasygnat, więc nie można ograniczyć czasu",
    },
    not_in_tree: {
      en: "digest is not in the checkpointed tree: {inner}",
      pl: "skrótu dokumentu nie ma w podpisanym drzewie: {inner}",
    },
    time_unbounded: {
      en: "{count} validator cosignatures cannot bound the time: f = {f} needs {f1}",
      pl: "{count} kontrasygnat(y) walidatorów nie wystarcza do ograniczenia czasu: przy f = {f} potrzeba {f1}",
    },
    // note.py
    note_too_large: { en: "note is larger than 1048576 bytes", pl: "notatka jest większa niż 1048576 bajtów" },
    note_control: {
      en: "{what} contains an ASCII control character",
      pl: "{what} zawiera znak sterujący ASCII",
    },
    note_no_newline: { en: "note does not end in a newline", pl: "notatka nie kończy się znakiem nowego wiersza" },
    note_text_no_newline: {
      en: "note text does not end in a newline",
      pl: "tekst notatki nie kończy się znakiem nowego wiersza",
    },
    note_no_blank: {
      en: "note has no blank line before its signatures",
      pl: "w notatce brakuje pustego wiersza przed podpisami",
    },
    note_no_signatures: { en: "note has no signatures", pl: "notatka nie ma podpisów" },
    note_too_many_signatures: {
      en: "note has more than 100 signatures",
      pl: "notatka ma więcej niż 100 podpisów",
    },
    sigline_prefix: {
      en: "signature line does not start with an em dash and a space",
      pl: "wiersz podpisu nie zaczyna się od pauzy (—) i spacji",
    },
    sigline_space: {
      en: "signature line lacks a space between name and signature",
      pl: "w wierszu podpisu brakuje spacji między nazwą a podpisem",
    },
    signature_too_short: { en: "signature is too short", pl: "podpis jest za krótki" },
    key_name_empty: { en: "{what} is empty", pl: "{what}: pusta" },
    key_name_chars: {
      en: "{what} {name} contains a space, '+' or control character",
      pl: "{what} {name} zawiera spację, '+' lub znak sterujący",
    },
    verifier_dup: {
      en: "two verifier keys share the name and key ID of {name}",
      pl: "dwa klucze weryfikujące mają tę samą nazwę i identyfikator co {name}",
    },
    vkey_shape: {
      en: "verifier key must be <name>+<key ID>+<key>",
      pl: "klucz weryfikujący musi mieć postać <nazwa>+<ID klucza>+<klucz>",
    },
    vkey_id_syntax: {
      en: "verifier key ID must be 8 lowercase hex digits",
      pl: "ID klucza weryfikującego musi składać się z 8 małych cyfr szesnastkowych",
    },
    vkey_short: { en: "verifier key material is too short", pl: "materiał klucza weryfikującego jest za krótki" },
    vkey_type: { en: "unsupported signature type 0x{type}", pl: "nieobsługiwany typ podpisu 0x{type}" },
    vkey_size: { en: "Ed25519 public key must be 32 bytes", pl: "klucz publiczny Ed25519 musi mieć 32 bajty" },
    vkey_id_mismatch: {
      en: "key ID of {name} does not match its key",
      pl: "ID klucza {name} nie zgadza się z kluczem",
    },
    note_dup_signature: {
      en: "note carries two signatures by key {name}",
      pl: "notatka zawiera dwa podpisy klucza {name}",
    },
    known_sig_fails: {
      en: "signature by known key {name} does not verify: {inner}",
      pl: "podpis znanego klucza {name} jest nieprawidłowy: {inner}",
    },
    cosig_length: {
      en: "cosignature by {name} has the wrong length",
      pl: "kontrasygnata {name} ma złą długość",
    },
    cosig_timestamp: {
      en: "cosignature by {name} has a timestamp above 2^63-1",
      pl: "kontrasygnata {name} ma znacznik czasu większy niż 2^63-1",
    },
    note_unsigned: {
      en: "note is not signed by any known key",
      pl: "notatka nie jest podpisana żadnym znanym kluczem",
    },
    // crypto.py
    ed25519_sig_size: { en: "Ed25519 signature must be 64 bytes", pl: "podpis Ed25519 musi mieć 64 bajty" },
    ed25519_bad: { en: "Ed25519 signature does not verify", pl: "podpis Ed25519 się nie zgadza" },
    // checkpoint.py
    checkpoint_no_newline: {
      en: "checkpoint does not end in a newline",
      pl: "punkt kontrolny nie kończy się znakiem nowego wiersza",
    },
    checkpoint_few_lines: {
      en: "checkpoint has fewer than three lines",
      pl: "punkt kontrolny ma mniej niż trzy wiersze",
    },
    checkpoint_empty_line: { en: "checkpoint contains an empty line", pl: "punkt kontrolny zawiera pusty wiersz" },
    checkpoint_root_size: { en: "checkpoint root must be 32 bytes", pl: "korzeń w punkcie kontrolnym musi mieć 32 bajty" },
    checkpoint_extensions: {
      en: "checkpoint has too many extension lines",
      pl: "punkt kontrolny ma za dużo wierszy rozszerzeń",
    },
    checkpoint_line_chars: {
      en: "checkpoint line contains a newline or control character",
      pl: "wiersz punktu kontrolnego zawiera znak nowego wiersza lub znak sterujący",
    },
    // policy.py
    policy_line: { en: "policy line {line}: {inner}", pl: "polityka, wiersz {line}: {inner}" },
    policy_too_large: { en: "policy is larger than 1048576 bytes", pl: "polityka jest większa niż 1048576 bajtów" },
    policy_control: {
      en: "control characters other than tab are not allowed",
      pl: "znaki sterujące inne niż tabulator są niedozwolone",
    },
    policy_unknown_keyword: { en: "unknown keyword {keyword}", pl: "nieznane słowo kluczowe {keyword}" },
    policy_log_syntax: { en: "expected 'log <vkey> [<url>]'", pl: "oczekiwano 'log <vkey> [<url>]'" },
    policy_witness_syntax: {
      en: "expected 'witness <name> <vkey> [<url>]'",
      pl: "oczekiwano 'witness <nazwa> <vkey> [<url>]'",
    },
    policy_group_syntax: {
      en: "expected 'group <name> <k|all|any> <member>...'",
      pl: "oczekiwano 'group <nazwa> <k|all|any> <członek>...'",
    },
    policy_quorum_syntax: { en: "expected 'quorum <name>'", pl: "oczekiwano 'quorum <nazwa>'" },
    policy_threshold_syntax: {
      en: "threshold {text} is not 'all', 'any' or a positive decimal",
      pl: "próg {text} nie jest 'all', 'any' ani dodatnią liczbą dziesiętną",
    },
    policy_log_type: {
      en: "a log key must have signature type 0x01 (Ed25519)",
      pl: "klucz rejestru (log) musi mieć typ podpisu 0x01 (Ed25519)",
    },
    policy_too_many_logs: { en: "policy lists too many logs", pl: "polityka wymienia za dużo rejestrów" },
    policy_dup_key: {
      en: "{what} key {name} duplicates a key already listed",
      pl: "klucz {what} {name} powtarza klucz już wymieniony",
    },
    policy_witness_type: {
      en: "a witness key must have signature type 0x04 (cosignature/v1)",
      pl: "klucz świadka musi mieć typ podpisu 0x04 (cosignature/v1)",
    },
    policy_name_ws: { en: "name is empty or contains whitespace", pl: "nazwa jest pusta lub zawiera odstęp" },
    policy_name_none: {
      en: "'none' is predefined and cannot be redefined",
      pl: "'none' jest predefiniowane i nie można go przedefiniować",
    },
    policy_name_dup: { en: "name {name} is already defined", pl: "nazwa {name} jest już zdefiniowana" },
    policy_too_many_names: { en: "policy defines too many names", pl: "polityka definiuje za dużo nazw" },
    policy_group_empty: { en: "group {name} has no members", pl: "grupa {name} nie ma członków" },
    policy_group_threshold: {
      en: "group {name} threshold {k} is not between 1 and {n}",
      pl: "próg {k} grupy {name} nie mieści się między 1 a {n}",
    },
    policy_member_none: { en: "'none' cannot be a group member", pl: "'none' nie może być członkiem grupy" },
    policy_member_undefined: {
      en: "group member {name} is not defined on an earlier line",
      pl: "członek grupy {name} nie jest zdefiniowany we wcześniejszym wierszu",
    },
    policy_member_dup: {
      en: "{name} is listed as a group member more than once",
      pl: "{name} występuje jako członek grupy więcej niż raz",
    },
    policy_quorum_dup: { en: "policy has more than one quorum line", pl: "polityka ma więcej niż jeden wiersz quorum" },
    policy_quorum_undefined: {
      en: "quorum {name} is not defined on an earlier line",
      pl: "kworum {name} nie jest zdefiniowane we wcześniejszym wierszu",
    },
    policy_no_quorum: { en: "policy has no quorum line", pl: "polityka nie ma wiersza quorum" },
    no_trusted_log: {
      en: "checkpoint is not signed by a trusted log for origin {origin}",
      pl: "punkt kontrolny nie jest podpisany przez zaufany rejestr dla origin {origin}",
    },
    quorum_shortfall: {
      en: "quorum {quorum} not met: {have} of {n} members witnessed, {k} required; not satisfied: {missing}",
      pl: "nie osiągnięto kworum {quorum}: poświadczyło {have} z {n} członków, wymagane {k}; niespełnione: {missing}",
    },
    quorum_witness_missing: {
      en: "quorum {quorum} not met: witness {quorum} did not cosign",
      pl: "nie osiągnięto kworum {quorum}: świadek {quorum} nie złożył kontrasygnaty",
    },
    // merkle/proof.py
    leaf_out_of_tree: {
      en: "leaf index {index} is not in a tree of size {size}",
      pl: "liścia o indeksie {index} nie ma w drzewie o rozmiarze {size}",
    },
    incl_too_many: { en: "inclusion proof has too many elements", pl: "dowód włączenia ma za dużo elementów" },
    incl_too_few: { en: "inclusion proof has too few elements", pl: "dowód włączenia ma za mało elementów" },
    incl_wrong_root: {
      en: "inclusion proof does not lead to the expected root",
      pl: "dowód włączenia nie prowadzi do oczekiwanego korzenia",
    },
    // the page itself (no Python twin)
    no_document: { en: "choose the document file", pl: "wybierz plik dokumentu" },
    no_receipt: { en: "choose the receipt file (.tlog-proof)", pl: "wybierz plik pokwitowania (.tlog-proof)" },
    no_policy: {
      en: "give the trust policy (paste it or choose its file)",
      pl: "podaj politykę zaufania (wklej ją lub wybierz jej plik)",
    },
    read_failed: { en: "cannot read the file {name}", pl: "nie można odczytać pliku {name}" },
    no_webcrypto: {
      en: "this browser gives the page no Web Crypto (crypto.subtle): open it over https, at localhost, or save it and open the file",
      pl: "przeglądarka nie udostępnia stronie Web Crypto (crypto.subtle): otwórz ją przez https, pod adresem localhost albo zapisz i otwórz jako plik",
    },
    no_ed25519: {
      en: "this browser's Web Crypto does not support Ed25519; use a current Chromium, Firefox or Safari",
      pl: "Web Crypto tej przeglądarki nie obsługuje Ed25519; użyj aktualnej przeglądarki Chromium, Firefox lub Safari",
    },
    internal: { en: "internal error: {detail}", pl: "błąd wewnętrzny: {detail}" },
  };

  /** Terms that Python passes as ``what=`` into shared messages. */
  const TERMS = {
    "receipt index": { en: "receipt index", pl: "indeks w pokwitowaniu" },
    "checkpoint size": { en: "checkpoint size", pl: "rozmiar drzewa w punkcie kontrolnym" },
    "checkpoint root": { en: "checkpoint root", pl: "korzeń w punkcie kontrolnym" },
    "receipt extra data": { en: "receipt extra data", pl: "dane dodatkowe pokwitowania" },
    "proof hash": { en: "proof hash", pl: "skrót dowodu" },
    signature: { en: "signature", pl: "podpis" },
    "verifier key": { en: "verifier key", pl: "klucz weryfikujący" },
    "key name": { en: "key name", pl: "nazwa klucza" },
    note: { en: "note", pl: "notatka" },
    "note text": { en: "note text", pl: "tekst notatki" },
    log: { en: "log", pl: "rejestru (log)" },
    witness: { en: "witness", pl: "świadka" },
  };

  class LedgerError extends Error {
    /**
     * kind: "malformed" (MalformedError), "verification" (VerificationError) or "page" (a
     * problem of this page or browser, with no Python twin).
     */
    constructor(kind, code, params) {
      super(code);
      this.kind = kind;
      this.code = code;
      this.params = params || {};
      this.message = render(this, "en");
    }
  }

  const malformed = (code, params) => new LedgerError("malformed", code, params);
  const failed = (code, params) => new LedgerError("verification", code, params);
  const pageError = (code, params) => new LedgerError("page", code, params);
  const term = (t) => ({ t: t });

  function render(error, lang) {
    const entry = MESSAGES[error.code];
    const template = entry ? entry[lang] || entry.en : error.code;
    return template.replace(/\{(\w+)\}/g, function (whole, key) {
      const value = error.params[key];
      if (value === undefined) return whole;
      if (value instanceof LedgerError) return render(value, lang);
      if (value !== null && typeof value === "object" && "t" in value) {
        const t = TERMS[value.t];
        return t ? t[lang] || t.en : value.t;
      }
      // {en, pl}: a text built by the caller in both languages (an event's label, a term).
      if (value !== null && typeof value === "object" && "en" in value) return value[lang] || value.en;
      return String(value);
    });
  }

  // str.isprintable() is false for these categories (and repr() escapes them), space aside.
  const PY_NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

  /** Python's repr() of a str, which the Python messages use for names ({name!r}). */
  function pyRepr(s) {
    const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
    let out = quote;
    for (const ch of s) {
      const c = ch.codePointAt(0);
      if (ch === quote || ch === "\\") out += "\\" + ch;
      else if (ch === "\n") out += "\\n";
      else if (ch === "\r") out += "\\r";
      else if (ch === "\t") out += "\\t";
      else if (ch !== " " && PY_NOT_PRINTABLE.test(ch)) {
        if (c < 0x100) out += "\\x" + c.toString(16).padStart(2, "0");
        else if (c < 0x10000) out += "\\u" + c.toString(16).padStart(4, "0");
        else out += "\\U" + c.toString(16).padStart(8, "0");
      } else out += ch;
    }
    return out + quote;
  }

  // ------------------------------------------------------------------------- byte helpers

  const utf8Encoder = new TextEncoder();
  const utf8 = (s) => utf8Encoder.encode(s);

  /** Python's bytes.decode("utf-8"): strict, and a BOM stays a character. */
  function decodeUtf8Strict(bytes) {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  }

  function concat(...parts) {
    let size = 0;
    for (const p of parts) size += p.length;
    const out = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equalBytes(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  function toHex(bytes) {
    let s = "";
    for (const b of bytes) s += b.toString(16).padStart(2, "0");
    return s;
  }

  function fromHex(text) {
    if (!/^([0-9a-fA-F]{2})*$/.test(text)) throw new TypeError("not hex");
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
    return out;
  }

  const B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

  function b64encode(bytes) {
    let out = "";
    for (let i = 0; i < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
      out += B64_ALPHABET[(n >> 18) & 63] + B64_ALPHABET[(n >> 12) & 63];
      out += i + 1 < bytes.length ? B64_ALPHABET[(n >> 6) & 63] : "=";
      out += i + 2 < bytes.length ? B64_ALPHABET[n & 63] : "=";
    }
    return out;
  }

  /**
   * ledger.crypto.b64decode_strict: standard padded base64, canonical form only.
   *
   * Python admits [A-Za-z0-9+/]*={0,2}, then decodes: a dangling sixth bit group, missing
   * padding, or padding beyond what the last group needs is an error, but padding after a
   * complete group is skipped; then it re-encodes and compares, so "AAAA=" is "not canonical"
   * while "AAA==" is "not valid". The same steps here give the same verdict and message
   * (tests/web/test_verify_page.py checks these edge cases against Python).
   */
  function b64decodeStrict(text, what) {
    if (!BASE64_SHAPE.test(text)) throw malformed("b64_invalid", { what: term(what) });
    const data = text.replace(/=+$/, "");
    const pads = text.length - data.length;
    const need = (4 - (data.length % 4)) % 4;
    if (data.length % 4 === 1 || (need > 0 && pads !== need)) {
      throw malformed("b64_invalid", { what: term(what) });
    }
    const out = new Uint8Array(Math.floor((data.length * 6) / 8));
    let acc = 0;
    let bits = 0;
    let at = 0;
    for (const ch of data) {
      acc = ((acc << 6) | B64_ALPHABET.indexOf(ch)) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[at++] = (acc >> bits) & 0xff;
      }
    }
    if (b64encode(out) !== text) throw malformed("b64_noncanonical", { what: term(what) });
    return out;
  }

  /** Python's str.split(sep, maxsplit): the last part keeps the rest (JavaScript's drops it). */
  function pySplit(s, sep, maxsplit) {
    const out = [];
    let rest = s;
    while (out.length < maxsplit) {
      const at = rest.indexOf(sep);
      if (at < 0) break;
      out.push(rest.slice(0, at));
      rest = rest.slice(at + sep.length);
    }
    out.push(rest);
    return out;
  }

  // ------------------------------------------------------------------------------ Web Crypto

  function subtle() {
    if (!globalThis.crypto || !globalThis.crypto.subtle) throw pageError("no_webcrypto");
    return globalThis.crypto.subtle;
  }

  async function sha256(bytes) {
    return new Uint8Array(await subtle().digest("SHA-256", bytes));
  }

  const importedKeys = new Map();

  /**
   * ledger.crypto.verify_ed25519. A key that is not a valid point fails like a bad signature
   * (PyNaCl does the same); only a browser without Ed25519 is a page error.
   */
  async function verifyEd25519(publicKey, message, signature) {
    if (signature.length !== SIGNATURE_SIZE) throw failed("ed25519_sig_size");
    const cacheKey = toHex(publicKey);
    let key = importedKeys.get(cacheKey);
    if (key === undefined) {
      try {
        key = await subtle().importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
      } catch (exc) {
        if (exc && exc.name === "NotSupportedError") throw pageError("no_ed25519");
        throw failed("ed25519_bad");
      }
      importedKeys.set(cacheKey, key);
    }
    let ok = false;
    try {
      ok = await subtle().verify({ name: "Ed25519" }, key, signature, message);
    } catch (exc) {
      if (exc && exc.name === "NotSupportedError") throw pageError("no_ed25519");
      ok = false;
    }
    if (!ok) throw failed("ed25519_bad");
  }

  // ------------------------------------------------------------------- keys (crypto.py, note.py)

  /** ledger.crypto.check_key_name */
  function checkKeyName(name, what) {
    what = what || "key name";
    if (!name) throw malformed("key_name_empty", { what: term(what) });
    for (const ch of name) {
      const c = ch.codePointAt(0);
      if (PY_SPACE.test(ch) || ch === "+" || c < 0x20 || c === 0x7f) {
        throw malformed("key_name_chars", { what: term(what), name: pyRepr(name) });
      }
    }
    return name;
  }

  /** Key ID = SHA-256(name || 0x0A || type || public key)[:4] (c2sp.org/signed-note). */
  async function keyId(name, sigType, publicKey) {
    const h = await sha256(concat(utf8(name), [0x0a], [sigType], publicKey));
    return h.slice(0, KEY_ID_SIZE);
  }

  /** ledger.note.Verifier.from_vkey, with the checks of Verifier.__post_init__. */
  async function parseVkey(vkey) {
    const parts = pySplit(vkey, "+", 2);
    if (parts.length !== 3) throw malformed("vkey_shape");
    const [name, hexId, material] = parts;
    checkKeyName(name);
    if (!HEX_KEY_ID.test(hexId)) throw malformed("vkey_id_syntax");
    const raw = b64decodeStrict(material, "verifier key");
    if (raw.length < 2) throw malformed("vkey_short");
    const sigType = raw[0];
    const publicKey = raw.slice(1);
    if (sigType !== SIG_TYPE_ED25519 && sigType !== SIG_TYPE_COSIGNATURE_V1) {
      throw malformed("vkey_type", { type: sigType.toString(16).padStart(2, "0") });
    }
    if (publicKey.length !== PUBLIC_KEY_SIZE) throw malformed("vkey_size");
    if (!equalBytes(fromHex(hexId), await keyId(name, sigType, publicKey))) {
      throw malformed("vkey_id_mismatch", { name: name });
    }
    return {
      name: name,
      keyId: fromHex(hexId),
      sigType: sigType,
      publicKey: publicKey,
      // The canonical text is the verifier's identity (Python compares the dataclass fields,
      // which this string determines and is determined by).
      vkey: name + "+" + hexId + "+" + b64encode(raw),
    };
  }

  // ------------------------------------------------------------------------ notes (note.py)

  function checkNoteChars(text, what) {
    if (NOTE_FORBIDDEN_CONTROL.test(text)) throw malformed("note_control", { what: term(what) });
  }

  /** ledger.note.Signature.parse_line */
  function parseSignatureLine(line) {
    if (!line.startsWith(SIGNATURE_LINE_PREFIX)) throw malformed("sigline_prefix");
    const rest = line.slice(SIGNATURE_LINE_PREFIX.length);
    const space = rest.indexOf(" ");
    if (space < 0) throw malformed("sigline_space");
    const name = rest.slice(0, space);
    const raw = b64decodeStrict(rest.slice(space + 1), "signature");
    if (raw.length <= KEY_ID_SIZE) throw malformed("signature_too_short");
    checkKeyName(name);
    return { name: name, keyId: raw.slice(0, KEY_ID_SIZE), signature: raw.slice(KEY_ID_SIZE) };
  }

  /** ledger.note.parse_note, for a str (the receipt's checkpoint part). */
  function parseNote(text) {
    if (utf8(text).length > MAX_NOTE_SIZE) throw malformed("note_too_large");
    checkNoteChars(text, "note");
    if (!text.endsWith("\n")) throw malformed("note_no_newline");
    // The text ends at the last "\n\n": the signatures after it cannot contain empty lines.
    const split = text.lastIndexOf("\n\n");
    if (split < 0) throw malformed("note_no_blank");
    const body = text.slice(0, split + 1);
    const sigBlock = text.slice(split + 2);
    if (!sigBlock) throw malformed("note_no_signatures");
    const lines = sigBlock.slice(0, -1).split("\n");
    if (lines.length > MAX_SIGNATURES) throw malformed("note_too_many_signatures");
    const signatures = lines.map(parseSignatureLine);
    // Note.__post_init__
    if (!body.endsWith("\n")) throw malformed("note_text_no_newline");
    checkNoteChars(body, "note text");
    return { text: body, signatures: signatures };
  }

  function signatureIdent(name, id) {
    return name + "\n" + toHex(id);
  }

  /** ledger.note.Verifier.verify: the cosignature timestamp (BigInt) for 0x04, null for 0x01. */
  async function verifySignature(verifier, text, signature) {
    if (verifier.sigType === SIG_TYPE_ED25519) {
      await verifyEd25519(verifier.publicKey, text, signature.signature);
      return null;
    }
    const blob = signature.signature;
    if (blob.length !== TIMESTAMP_SIZE + SIGNATURE_SIZE) {
      throw failed("cosig_length", { name: verifier.name });
    }
    let timestamp = 0n;
    for (let i = 0; i < TIMESTAMP_SIZE; i++) timestamp = (timestamp << 8n) | BigInt(blob[i]);
    if (timestamp > MAX_TIMESTAMP) throw failed("cosig_timestamp", { name: verifier.name });
    const message = concat(utf8(COSIGNATURE_V1_HEADER + "time " + timestamp.toString() + "\n"), text);
    await verifyEd25519(verifier.publicKey, message, blob.slice(TIMESTAMP_SIZE));
    return timestamp;
  }

  /**
   * ledger.note.open_note: unknown (name, key ID) pairs are ignored; a known key that fails, or
   * signs twice, rejects the note; no known signature at all rejects it too.
   */
  async function openNote(note, verifiers) {
    const byId = new Map();
    for (const v of verifiers) {
      const ident = signatureIdent(v.name, v.keyId);
      if (byId.has(ident) && byId.get(ident).vkey !== v.vkey) {
        throw malformed("verifier_dup", { name: v.name });
      }
      byId.set(ident, v);
    }
    const text = utf8(note.text);
    const verified = [];
    const seen = new Set();
    for (const signature of note.signatures) {
      const ident = signatureIdent(signature.name, signature.keyId);
      const known = byId.get(ident);
      if (known === undefined) continue;
      if (seen.has(ident)) throw failed("note_dup_signature", { name: signature.name });
      seen.add(ident);
      let timestamp;
      try {
        timestamp = await verifySignature(known, text, signature);
      } catch (exc) {
        if (exc instanceof LedgerError && exc.kind === "verification") {
          throw failed("known_sig_fails", { name: signature.name, inner: exc });
        }
        throw exc;
      }
      verified.push({ verifier: known, timestamp: timestamp });
    }
    if (verified.length === 0) throw failed("note_unsigned");
    return verified;
  }

  // ------------------------------------------------------------ checkpoints (checkpoint.py)

  /** ledger.checkpoint.parse_decimal, as a BigInt. */
  function parseDecimal(text, what, limit) {
    if (text.length > 20 || !DECIMAL.test(text)) throw malformed("decimal_syntax", { what: term(what) });
    const value = BigInt(text);
    if (value > (limit === undefined ? MAX_TREE_SIZE : limit)) {
      throw malformed("decimal_range", { what: term(what) });
    }
    return value;
  }

  /** ledger.checkpoint.parse_checkpoint_body (and Checkpoint.__post_init__). */
  function parseCheckpointBody(text) {
    if (!text.endsWith("\n")) throw malformed("checkpoint_no_newline");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) throw malformed("checkpoint_few_lines");
    if (lines.some((line) => !line)) throw malformed("checkpoint_empty_line");
    const [origin, sizeText, rootText, ...extensions] = lines;
    const size = parseDecimal(sizeText, "checkpoint size");
    const root = b64decodeStrict(rootText, "checkpoint root");
    if (root.length !== HASH_SIZE) throw malformed("checkpoint_root_size");
    if (extensions.length > MAX_EXTENSIONS) throw malformed("checkpoint_extensions");
    for (const line of [origin, ...extensions]) {
      for (const ch of line) {
        const c = ch.codePointAt(0);
        if (c < 0x20 || c === 0x7f) throw malformed("checkpoint_line_chars");
      }
    }
    return { origin: origin, size: size, root: root, extensions: extensions };
  }

  // ------------------------------------------------------------------- policies (policy.py)

  class PolicyBuilder {
    constructor() {
      this.logs = [];
      this.witnesses = [];
      this.groups = [];
      this.quorum = null;
      this.names = new Set();
      this.members = new Set();
      this.keys = new Set();
    }

    newKey(verifier, what) {
      const k = toHex(verifier.publicKey);
      if (this.keys.has(k)) throw malformed("policy_dup_key", { what: term(what), name: verifier.name });
      this.keys.add(k);
    }

    newName(name) {
      if (!name || POLICY_SPLIT.test(name)) throw malformed("policy_name_ws");
      if (name === NONE) throw malformed("policy_name_none");
      if (this.names.has(name)) throw malformed("policy_name_dup", { name: pyRepr(name) });
      if (this.names.size >= 2 * MAX_POLICY_ENTRIES) throw malformed("policy_too_many_names");
    }

    addLog(log) {
      if (log.verifier.sigType !== SIG_TYPE_ED25519) throw malformed("policy_log_type");
      if (this.logs.length >= MAX_POLICY_ENTRIES) throw malformed("policy_too_many_logs");
      this.newKey(log.verifier, "log");
      this.logs.push(log);
    }

    addWitness(witness) {
      if (witness.verifier.sigType !== SIG_TYPE_COSIGNATURE_V1) throw malformed("policy_witness_type");
      this.newName(witness.name);
      this.newKey(witness.verifier, "witness");
      this.names.add(witness.name);
      this.witnesses.push(witness);
    }

    addGroup(group) {
      this.newName(group.name);
      if (group.members.length === 0) throw malformed("policy_group_empty", { name: pyRepr(group.name) });
      if (!(group.threshold >= 1 && group.threshold <= group.members.length)) {
        throw malformed("policy_group_threshold", {
          name: pyRepr(group.name),
          k: String(group.threshold),
          n: String(group.members.length),
        });
      }
      for (const member of group.members) {
        if (member === NONE) throw malformed("policy_member_none");
        if (!this.names.has(member)) throw malformed("policy_member_undefined", { name: pyRepr(member) });
        if (this.members.has(member)) throw malformed("policy_member_dup", { name: pyRepr(member) });
        this.members.add(member);
      }
      this.names.add(group.name);
      this.groups.push(group);
    }

    setQuorum(name) {
      if (this.quorum !== null) throw malformed("policy_quorum_dup");
      if (name !== NONE && !this.names.has(name)) {
        throw malformed("policy_quorum_undefined", { name: pyRepr(name) });
      }
      this.quorum = name;
    }
  }

  function parseThreshold(text, n) {
    if (text === "any") return 1;
    if (text === "all") return n;
    if (!POLICY_THRESHOLD.test(text)) throw malformed("policy_threshold_syntax", { text: pyRepr(text) });
    return parseInt(text, 10);
  }

  async function parsePolicyLine(builder, line) {
    if (POLICY_FORBIDDEN.test(line)) throw malformed("policy_control");
    const items = line.split(POLICY_SPLIT).filter((item) => item);
    if (items.length === 0 || items[0].startsWith("#")) return;
    const keyword = items[0];
    const args = items.slice(1);
    if (keyword === "log") {
      if (args.length !== 1 && args.length !== 2) throw malformed("policy_log_syntax");
      builder.addLog({ verifier: await parseVkey(args[0]), url: args.length === 2 ? args[1] : null });
    } else if (keyword === "witness") {
      if (args.length !== 2 && args.length !== 3) throw malformed("policy_witness_syntax");
      builder.addWitness({
        name: args[0],
        verifier: await parseVkey(args[1]),
        url: args.length === 3 ? args[2] : null,
      });
    } else if (keyword === "group") {
      if (args.length < 3) throw malformed("policy_group_syntax");
      const members = args.slice(2);
      builder.addGroup({ name: args[0], threshold: parseThreshold(args[1], members.length), members: members });
    } else if (keyword === "quorum") {
      if (args.length !== 1) throw malformed("policy_quorum_syntax");
      builder.setQuorum(args[0]);
    } else {
      throw malformed("policy_unknown_keyword", { keyword: pyRepr(keyword) });
    }
  }

  /**
   * ledger.policy.parse_policy. Python decodes with surrogateescape so that high octets in
   * names compare octet-wise; here invalid UTF-8 becomes U+FFFD, which can only make a name
   * differ from what the checkpoint carries (and so fail closed), never match by accident.
   */
  async function parsePolicy(bytes) {
    if (typeof bytes === "string") bytes = utf8(bytes);
    if (bytes.length > MAX_POLICY_SIZE) throw malformed("policy_too_large");
    const text = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(bytes);
    const builder = new PolicyBuilder();
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      try {
        await parsePolicyLine(builder, lines[i]);
      } catch (exc) {
        if (exc instanceof LedgerError && exc.kind === "malformed") {
          throw malformed("policy_line", { line: String(i + 1), inner: exc });
        }
        throw exc;
      }
    }
    if (builder.quorum === null) throw malformed("policy_no_quorum");
    return {
      logs: builder.logs,
      witnesses: builder.witnesses,
      groups: builder.groups,
      quorum: builder.quorum,
    };
  }

  function policyVerifiers(policy) {
    return policy.logs.map((l) => l.verifier).concat(policy.witnesses.map((w) => w.verifier));
  }

  /** Policy.quorum_witnesses: the leaves under the quorum, in policy order. */
  function quorumWitnesses(policy) {
    const groups = new Map(policy.groups.map((g) => [g.name, g]));
    const wanted = new Set();
    const pending = policy.quorum !== NONE ? [policy.quorum] : [];
    while (pending.length) {
      const name = pending.pop();
      const group = groups.get(name);
      if (group === undefined) wanted.add(name);
      else pending.push(...group.members);
    }
    return policy.witnesses.filter((w) => wanted.has(w.name));
  }

  /** Policy.evaluate: a trusted log named like the origin signed, and the quorum is met. */
  function evaluatePolicy(policy, signers, origin) {
    const signed = new Set(signers.map((v) => v.vkey));
    const log = policy.logs.find((l) => signed.has(l.verifier.vkey) && l.verifier.name === origin);
    if (log === undefined) throw failed("no_trusted_log", { origin: pyRepr(origin) });
    const cosigned = new Set(policy.witnesses.filter((w) => signed.has(w.verifier.vkey)).map((w) => w.name));
    const satisfied = new Set(cosigned);
    // Groups may only name earlier definitions, so one pass in file order settles them all.
    for (const group of policy.groups) {
      if (group.members.filter((m) => satisfied.has(m)).length >= group.threshold) satisfied.add(group.name);
    }
    if (policy.quorum !== NONE && !satisfied.has(policy.quorum)) {
      const top = policy.groups.find((g) => g.name === policy.quorum);
      if (top !== undefined) {
        const groupNames = new Set(policy.groups.map((g) => g.name));
        throw failed("quorum_shortfall", {
          quorum: pyRepr(policy.quorum),
          have: String(top.members.filter((m) => satisfied.has(m)).length),
          n: String(top.members.length),
          k: String(top.threshold),
          missing: top.members
            .filter((m) => !satisfied.has(m))
            .map((m) => (groupNames.has(m) ? "group " : "witness ") + pyRepr(m))
            .join(", "),
        });
      }
      throw failed("quorum_witness_missing", { quorum: pyRepr(policy.quorum) });
    }
    return { log: log, cosigners: policy.witnesses.filter((w) => cosigned.has(w.name)).map((w) => w.name) };
  }

  // --------------------------------------------------------------- Merkle (merkle/proof.py)

  async function leafHash(digest) {
    return sha256(concat([LEAF_HASH_PREFIX], digest));
  }

  async function nodeHash(left, right) {
    return sha256(concat([NODE_HASH_PREFIX], left, right));
  }

  /** RFC 9162 section 2.1.3.2, step by step, as ledger.merkle.proof.verify_inclusion. */
  async function verifyInclusion(leaf, index, size, proof, root) {
    if (index >= size) {
      throw failed("leaf_out_of_tree", { index: index.toString(), size: size.toString() });
    }
    let fn = index;
    let sn = size - 1n;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) throw failed("incl_too_many");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw failed("incl_too_few");
    if (!equalBytes(r, root)) throw failed("incl_wrong_root");
  }

  // ------------------------------------------------------------------ receipts (receipt.py)

  /** ledger.receipt.parse_receipt, for bytes. */
  function parseReceipt(bytes) {
    if (bytes.length > MAX_RECEIPT_SIZE) throw malformed("receipt_too_large");
    let text;
    try {
      text = decodeUtf8Strict(bytes);
    } catch (exc) {
      throw malformed("receipt_not_utf8");
    }
    let pos = 0;
    const next = function () {
      const end = text.indexOf("\n", pos);
      if (end < 0) throw malformed("receipt_truncated");
      const line = text.slice(pos, end);
      pos = end + 1;
      return line;
    };
    if (next() !== RECEIPT_HEADER) throw malformed("receipt_header");
    let line = next();
    let extra = null;
    if (line.startsWith("extra ")) {
      extra = b64decodeStrict(line.slice("extra ".length), "receipt extra data");
      line = next();
    }
    if (!line.startsWith("index ")) throw malformed("receipt_no_index");
    const index = parseDecimal(line.slice("index ".length), "receipt index");
    const proof = [];
    while ((line = next()) !== "") {
      if (proof.length === MAX_PROOF_HASHES) throw malformed("receipt_too_many_hashes");
      proof.push(b64decodeStrict(line, "proof hash"));
    }
    const checkpoint = text.slice(pos);
    // Receipt.__post_init__
    if (proof.some((h) => h.length !== HASH_SIZE)) throw malformed("proof_hash_size");
    if (extra !== null && extra.length > MAX_EXTRA) throw malformed("extra_too_large");
    parseCheckpointBody(parseNote(checkpoint).text);
    return { index: index, proof: proof, checkpoint: checkpoint, extra: extra };
  }

  /** ledger.receipt.time_bound: the (f + 1)-th smallest timestamp. */
  function timeBound(timestamps, f) {
    if (timestamps.length < f + 1) {
      throw failed("time_unbounded", { count: String(timestamps.length), f: String(f), f1: String(f + 1) });
    }
    const sorted = timestamps.slice().sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return sorted[f];
  }

  /**
   * Policy.time_bound: bottom up, a group of witnesses bounds the time with the (f + 1)-th
   * smallest of its members' timestamps (f = n - k), a group of groups with the k-th smallest
   * of its members' bounds. stamps: Map of witness name -> BigInt timestamp.
   */
  function policyTimeBound(policy, stamps) {
    if (policy.quorum === NONE) throw failed("no_quorum_policy");
    const groups = new Map(policy.groups.map((g) => [g.name, g]));
    const satisfied = new Set(stamps.keys());
    for (const group of policy.groups) {
      if (group.members.filter((m) => satisfied.has(m)).length >= group.threshold) satisfied.add(group.name);
    }
    function bound(name) {
      const group = groups.get(name);
      if (group === undefined) return stamps.has(name) ? stamps.get(name) : null;
      if (!satisfied.has(name)) return null;
      const found = group.members.map(bound).filter((b) => b !== null);
      const composite = group.members.some((m) => groups.has(m));
      return timeBound(found, composite ? group.threshold - 1 : group.members.length - group.threshold);
    }
    const result = bound(policy.quorum);
    return result === null ? timeBound([], 0) : result;
  }

  /**
   * ledger.receipt.verify_receipt: the same steps in the same order, so that the first failure
   * (and its reason) is the one Python reports.
   *
   * Returns {index, size, origin, root, cosigners, timeBound} (index, size, timeBound BigInt).
   */
  async function verifyReceipt(receiptBytes, policy, digest) {
    const receipt = parseReceipt(receiptBytes);
    if (digest.length !== HASH_SIZE) throw malformed("internal", { detail: "digest must be 32 bytes" });
    if (policy.quorum === NONE) throw failed("no_quorum_policy");
    // open_checkpoint: parse the note and its body, then verify the known signatures.
    const note = parseNote(receipt.checkpoint);
    const checkpoint = parseCheckpointBody(note.text);
    const verified = await openNote(note, policyVerifiers(policy));
    evaluatePolicy(policy, verified.map((v) => v.verifier), checkpoint.origin);
    try {
      await verifyInclusion(await leafHash(digest), receipt.index, checkpoint.size, receipt.proof, checkpoint.root);
    } catch (exc) {
      if (exc instanceof LedgerError && exc.kind === "verification") throw failed("not_in_tree", { inner: exc });
      throw exc;
    }
    const validators = new Map(quorumWitnesses(policy).map((w) => [w.verifier.vkey, w.name]));
    const stamps = new Map();
    const cosigners = [];
    for (const signature of verified) {
      const name = validators.get(signature.verifier.vkey);
      if (name !== undefined && signature.timestamp !== null) {
        stamps.set(name, signature.timestamp);
        cosigners.push(name);
      }
    }
    return {
      index: receipt.index,
      size: checkpoint.size,
      origin: checkpoint.origin,
      root: checkpoint.root,
      cosigners: cosigners,
      timeBound: policyTimeBound(policy, stamps),
    };
  }

  /** The time bound as the CLI prints it: UTC ISO 8601 to the second. */
  function formatTime(seconds, lang) {
    if (seconds <= MAX_ISO_SECONDS) {
      return new Date(Number(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
    }
    return lang === "pl"
      ? seconds.toString() + " s od początku epoki Uniksa"
      : seconds.toString() + " seconds after the Unix epoch";
  }

  /**
   * One call for tests: the verdict of the page's verifier on (receipt text, policy text,
   * digest hex), as plain data comparable with the Python verifier's.
   */
  async function check(receiptBytes, policyBytes, digestHex) {
    try {
      const policy = await parsePolicy(policyBytes);
      const result = await verifyReceipt(receiptBytes, policy, fromHex(digestHex));
      return {
        valid: true,
        index: result.index.toString(),
        size: result.size.toString(),
        origin: result.origin,
        root: toHex(result.root),
        cosigners: result.cosigners,
        time_bound: result.timeBound.toString(),
      };
    } catch (exc) {
      if (exc instanceof LedgerError) return { valid: false, kind: exc.kind, reason: exc.message };
      return { valid: false, kind: "internal", reason: String(exc) };
    }
  }

  // =================================================================== EOD audit-trail bundles
  //
  // A JavaScript twin of ledger/eod/trail.py verify_trail, with everything it judges by:
  // canonical.py, events.py, pki.py, records.py (office record, trail head), timing.py (proven
  // times), calendar.py and holidays.py (the office's zone, Polish holidays, the KPA terms),
  // paths.py (the acceptance path carried by the opening event) and the whole of rules.py:
  // the same checks, in the same order, with the same messages (in English word for word), so
  // that tests/web/test_verify_trail.py can compare the two verdicts on the same bundles, valid
  // and broken, and the timelines line by line.

  const TRAIL_FORMAT = "ledger-eod-trail/v2";
  const EVENT_FORMAT = "ledger-eod-event/v2";
  const CERT_FORMAT = "ledger-eod-position/v1";
  const OFFICE_FORMAT = "ledger-eod-office/v1";
  const HEAD_FORMAT = "ledger-eod-head/v1";
  const MAX_BUNDLE_SIZE = 64 * 1024 * 1024;
  const MAX_CLOCK_SKEW = 600n;
  const MAX_SEQ = 1n << 40n;
  const INT64_MIN = -(1n << 63n);
  const INT64_MAX = (1n << 63n) - 1n;
  const MAX_JSON_DEPTH = 900;
  const EVENT_SIGNING_DOMAIN = "ledger/eod-event-signature/v1\n";
  const CERT_SIGNING_DOMAIN = "ledger/eod-position-certificate/v1\n";
  const OFFICE_DOMAIN = "ledger/eod-office-record/v1\n";
  const HEAD_DOMAIN = "ledger/eod-trail-head/v1\n";
  const IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  const LOWER_HEX_DIGEST = /^[0-9a-f]{64}$/;
  const EVENT_FIELDS = ["case", "data", "declared", "document", "format", "office", "position", "prev", "seen", "seq", "time", "type"];
  const CERT_FIELDS = ["format", "issued", "office", "position", "public_key", "roles", "title", "unit"];
  const OFFICE_FIELDS = ["ca_public_key", "format", "id", "name", "zone"];
  const HEAD_FIELDS = ["case", "chain", "count", "format", "last", "office", "time"];
  /** calendar._MAX_SHOWN */
  const MAX_SHOWN = 253402300799n - 2n * 86400n;
  const FIRST_YEAR = 1990;
  const LAST_YEAR = 9998;

  /** ledger.eod.model.EVENT_TERMS and rules.REQUIRED_ROLE, by event type (in enum order). */
  const EVENT_TYPES = {
    registered: ["registration", "rejestracja przesyłki", "registry"],
    assigned: ["assignment", "dekretacja", "assign"],
    "case-opened": ["case opened", "założenie sprawy", "officer"],
    attached: ["attachment", "dołączenie dokumentu", "officer"],
    submitted: ["submitted for acceptance", "przekazanie do akceptacji", "officer"],
    accepted: ["acceptance", "akceptacja", "accept"],
    rejected: ["rejection", "odrzucenie", "accept"],
    signed: ["signature", "podpis", "sign"],
    "substantive-check": ["substantive check", "kontrola merytoryczna", "substantive"],
    "formal-check": ["formal and arithmetic check", "kontrola formalna i rachunkowa", "accounts"],
    "account-coding": ["account coding", "dekretacja księgowa", "accounts"],
    countersigned: ["countersignature", "kontrasygnata", "chief-accountant"],
    "approved-for-payment": ["approval for payment", "zatwierdzenie do wypłaty", "approve-payment"],
    dispatched: ["dispatch", "wysyłka", "registry"],
    "receipt-recorded": ["official receipt recorded", "zapis poświadczenia UPP/UPO/UPD", "registry"],
    delivered: ["delivery", "doręczenie", "registry"],
    closed: ["case closed", "zakończenie sprawy", "officer"],
    reopened: ["case reopened", "wznowienie sprawy", "officer"],
    archived: ["archived", "przekazanie do archiwum zakładowego", "archivist"],
    destroyed: ["destruction", "brakowanie", "archivist"],
    transferred: ["transfer to the state archive", "przekazanie do archiwum państwowego", "archivist"],
  };
  /** ledger.eod.model.Role, in enum order (sorting certificates' roles uses the values). */
  const ROLE_POLISH = {
    registry: "kancelaria",
    assign: "dekretujący",
    officer: "prowadzący sprawę",
    accept: "akceptujący",
    sign: "podpisujący",
    substantive: "kontrola merytoryczna",
    accounts: "księgowość",
    "chief-accountant": "główny księgowy: kontrasygnata",
    "approve-payment": "kierownik: zatwierdzenie do wypłaty",
    archivist: "archiwum zakładowe",
  };
  const COST_STEPS = ["substantive-check", "formal-check", "account-coding", "countersigned", "approved-for-payment"];
  const PATH_STEPS = ["accepted", "rejected", ...COST_STEPS];
  const OFFICER_STEPS = ["attached", "submitted", "closed", "reopened"];
  const LATE_OK = ["receipt-recorded", "delivered", "archived", "destroyed", "transferred", "reopened"];
  /** rules.ARCHIVE_TRANSFER_YEARS */
  const ARCHIVE_TRANSFER_YEARS = 25;
  const DIRECTIONS = ["incoming", "outgoing", "internal"];
  const RECEIPT_KINDS = ["UPP", "UPO", "UPD"];
  const CATEGORY = /^(?:A|Bc|B([1-9][0-9]{0,2})|BE([1-9][0-9]{0,2}))$/;
  const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

  /** rules.term: "<English> (<Polish>)" in English; the Polish name in Polish. */
  function eventTerm(type) {
    const [en, pl] = EVENT_TYPES[type];
    return { en: en + " (" + pl + ")", pl: pl };
  }

  Object.assign(TERMS, {
    "trail bundle": { en: "trail bundle", pl: "wiązka ścieżki audytu" },
    "CA key": { en: "CA key", pl: "klucz CA urzędu" },
    "certificate public key": { en: "certificate public key", pl: "klucz publiczny w certyfikacie" },
    "certificate signature": { en: "certificate signature", pl: "podpis certyfikatu" },
    "event signature": { en: "event signature", pl: "podpis zdarzenia" },
    "office record signature": { en: "office record signature", pl: "podpis rekordu urzędu" },
    "trail head signature": { en: "trail head signature", pl: "podpis nagłówka ścieżki" },
    "seen checkpoint root": { en: "seen checkpoint root", pl: "korzeń widzianego punktu kontrolnego" },
    "office id": { en: "office id", pl: "identyfikator urzędu" },
    "position id": { en: "position id", pl: "identyfikator stanowiska" },
    prev: { en: "prev", pl: "prev (skrót poprzedniego zdarzenia)" },
    document: { en: "document", pl: "document (skrót dokumentu)" },
    "document digest": { en: "document digest", pl: "skrót dokumentu" },
    "the trail head's chain": { en: "the trail head's chain", pl: "łańcuch w nagłówku ścieżki" },
    "the trail head's last event": { en: "the trail head's last event", pl: "ostatnie zdarzenie w nagłówku ścieżki" },
    "data field 'draft'": { en: "data field 'draft'", pl: "pole danych 'draft'" },
  });

  Object.assign(MESSAGES, {
    // canonical.py (loads) and trail.py (_load, _field)
    json_too_large: { en: "{what} is larger than {limit} bytes", pl: "{what}: plik większy niż {limit} bajtów" },
    json_not_utf8: { en: "{what} is not valid UTF-8", pl: "{what}: to nie jest poprawny tekst UTF-8" },
    json_invalid: { en: "{what} is not valid JSON: {detail}", pl: "{what}: to nie jest poprawny JSON: {detail}" },
    json_not_object: { en: "{what} is not a JSON object", pl: "{what}: to nie jest obiekt JSON" },
    json_duplicate: { en: "duplicate key {key}", pl: "powtórzony klucz {key}" },
    json_float: { en: "floating-point numbers are not allowed", pl: "liczby zmiennoprzecinkowe są niedozwolone" },
    json_constant: { en: "{text} is not allowed", pl: "{text} jest niedozwolone" },
    json_int_range: { en: "{where}: integer out of the 64-bit range", pl: "{where}: liczba całkowita poza zakresem 64 bitów" },
    json_format: { en: "{what} is not a {format} file", pl: "{what}: to nie jest plik {format}" },
    field_type: { en: "{what}: field {key} is missing or has the wrong type", pl: "{what}: brak pola {key} albo ma zły typ" },
    // records.py
    office_shape: {
      en: "the office record is {'office': {...}, 'signature': '...'}",
      pl: "rekord urzędu ma postać {'office': {...}, 'signature': '...'}",
    },
    office_fields: {
      en: "the office record has exactly the fields " + OFFICE_FIELDS.join(", "),
      pl: "rekord urzędu ma dokładnie pola " + OFFICE_FIELDS.join(", "),
    },
    office_format: { en: "the office record is not " + OFFICE_FORMAT, pl: "rekord urzędu nie jest w formacie " + OFFICE_FORMAT },
    office_strings: { en: "the office record's fields must be strings", pl: "pola rekordu urzędu muszą być tekstem" },
    ca_key_size: { en: "the office CA key must be 32 bytes", pl: "klucz CA urzędu musi mieć 32 bajty" },
    office_not_signed: {
      en: "the office record is not signed by its CA key (its name or zone was changed)",
      pl: "rekord urzędu nie jest podpisany jego kluczem CA (zmieniono nazwę albo strefę czasową)",
    },
    signature_text: { en: "the {what} signature must be base64 text", pl: "podpis ({what}) musi być tekstem base64" },
    signature_size: { en: "the {what} signature is 64 bytes", pl: "podpis ({what}) ma 64 bajty" },
    zone_name: {
      en: "time zone {zone} is not an IANA zone name (e.g. Europe/Warsaw)",
      pl: "strefa czasowa {zone} nie jest nazwą strefy IANA (np. Europe/Warsaw)",
    },
    zone_unknown: {
      en: "unknown time zone {zone} (an IANA name, e.g. Europe/Warsaw)",
      pl: "nieznana strefa czasowa {zone} (nazwa IANA, np. Europe/Warsaw)",
    },
    head_missing: {
      en: "the trail has no signed head (its end is not proven: events may have been dropped)",
      pl: "ścieżka nie ma podpisanego nagłówka (jej koniec nie jest dowiedziony: mogło brakować zdarzeń)",
    },
    head_shape: {
      en: "the trail head is {'head': {...}, 'signature': '...'}",
      pl: "nagłówek ścieżki ma postać {'head': {...}, 'signature': '...'}",
    },
    head_format: { en: "the trail head is not a " + HEAD_FORMAT + " record", pl: "nagłówek ścieżki nie jest rekordem " + HEAD_FORMAT },
    head_ints: {
      en: "the trail head's count and time are non-negative integers",
      pl: "liczba zdarzeń i czas w nagłówku ścieżki to nieujemne liczby całkowite",
    },
    head_case: { en: "the trail head's case is a case sign or null", pl: "sprawa w nagłówku ścieżki to znak sprawy albo null" },
    head_office_type: { en: "the trail head's office must be a string", pl: "urząd w nagłówku ścieżki musi być tekstem" },
    head_not_signed: { en: "the trail head is not signed by the office CA", pl: "nagłówek ścieżki nie jest podpisany kluczem CA urzędu" },
    head_office: { en: "the trail head is of office {office}", pl: "nagłówek ścieżki dotyczy urzędu {office}" },
    head_count: {
      en: "the trail holds {n} events, but its signed head counts {count}: events were dropped or added",
      pl: "ścieżka ma {n} zdarzeń, a jej podpisany nagłówek liczy {count}: zdarzenia usunięto albo dodano",
    },
    head_events: {
      en: "the trail's events are not the ones its signed head names",
      pl: "zdarzenia ścieżki nie są tymi, które wskazuje jej podpisany nagłówek",
    },
    // trail.py (_trust, _certificates, _checkpoints, _check_event, verify_trail)
    ca_key_not_pinned: {
      en: "the office CA key in the {what} ({fingerprint}) is not the pinned key",
      pl: "klucz CA urzędu w pliku ({fingerprint}) nie jest kluczem podanym do porównania",
    },
    cert_not_object: { en: "a certificate must be a JSON object", pl: "certyfikat musi być obiektem JSON" },
    cert_other_office: { en: "certificate of {position} is for office {office}", pl: "certyfikat stanowiska {position} dotyczy urzędu {office}" },
    cert_twice: { en: "two certificates for position {position}", pl: "dwa certyfikaty stanowiska {position}" },
    checkpoint_text: {
      en: "checkpoints[{index}] must be a checkpoint note (text)",
      pl: "checkpoints[{index}] musi być notatką punktu kontrolnego (tekstem)",
    },
    checkpoint_fails: {
      en: "checkpoint {index} does not verify: {inner}",
      pl: "punkt kontrolny {index} się nie zgadza: {inner}",
    },
    trail_empty: { en: "the trail holds no events", pl: "ścieżka nie zawiera żadnych zdarzeń" },
    entry_shape: {
      en: "events[{index}] must be {'event': ..., 'receipt': ...}",
      pl: "events[{index}] musi mieć postać {'event': ..., 'receipt': ...}",
    },
    entry_event: { en: "events[{index}].event must be an object", pl: "events[{index}].event musi być obiektem" },
    event_no_cert: { en: "{what}: no certificate for position {position}", pl: "{what}: brak certyfikatu stanowiska {position}" },
    event_bad_signature: {
      en: "{what}: the signature of {position} does not verify (the event was changed)",
      pl: "{what}: podpis stanowiska {position} się nie zgadza (zdarzenie zmieniono)",
    },
    receipt_not_text: { en: "{what}: the receipt must be text", pl: "{what}: pokwitowanie musi być tekstem" },
    receipt_fails: {
      en: "{what}: the ledger receipt does not verify: {inner}",
      pl: "{what}: pokwitowanie z rejestru się nie zgadza: {inner}",
    },
    seen_missing: {
      en: "{what}: the checkpoint it names (tree size {size}) is not in the bundle",
      pl: "{what}: punktu kontrolnego, który wskazuje (rozmiar drzewa {size}), nie ma w wiązce",
    },
    seen_after_leaf: {
      en: "{what}: its ledger leaf precedes the checkpoint it names",
      pl: "{what}: jego liść w rejestrze poprzedza punkt kontrolny, który wskazuje",
    },
    event_after_bound: {
      en: "{what}: dated {time}, after the ledger's time bound {bound}",
      pl: "{what}: datowane {time}, później niż ograniczenie czasu z rejestru {bound}",
    },
    event_before_seen: {
      en: "{what}: dated {time}, before the ledger checkpoint it names ({after})",
      pl: "{what}: datowane {time}, wcześniej niż punkt kontrolny rejestru, który wskazuje ({after})",
    },
    workflow: { en: "{what}: {inner}", pl: "{what}: {inner}" },
    case_mismatch: {
      en: "the bundle says case {case} but its events are case {actual}",
      pl: "wiązka podaje sprawę {case}, a jej zdarzenia dotyczą sprawy {actual}",
    },
    document_entry: { en: "a document entry must be an object", pl: "wpis dokumentu musi być obiektem" },
    document_not_in_case: { en: "the document {digest} is not part of this case", pl: "dokument {digest} nie należy do tej sprawy" },
    // events.py
    hex_digest: { en: "{what} must be 64 lowercase hex digits", pl: "{what}: wymagane 64 małe cyfry szesnastkowe" },
    signed_event_shape: {
      en: "a signed event is {'event': {...}, 'signature': '...'}",
      pl: "podpisane zdarzenie ma postać {'event': {...}, 'signature': '...'}",
    },
    event_signature_text: { en: "an event signature must be base64 text", pl: "podpis zdarzenia musi być tekstem base64" },
    event_signature_size: { en: "an event signature is 64 bytes", pl: "podpis zdarzenia ma 64 bajty" },
    event_fields: {
      en: "an event has exactly the fields " + EVENT_FIELDS.join(", "),
      pl: "zdarzenie ma dokładnie pola " + EVENT_FIELDS.join(", "),
    },
    event_format: { en: "unknown event format {value}", pl: "nieznany format zdarzenia {value}" },
    event_type: { en: "unknown event type {value}", pl: "nieznany typ zdarzenia {value}" },
    event_data: { en: "event field 'data' must be an object", pl: "pole zdarzenia 'data' musi być obiektem" },
    event_opt_str: { en: "event field {key} must be a non-empty string or null", pl: "pole zdarzenia {key} musi być niepustym tekstem albo null" },
    event_required: { en: "event fields 'office' and 'position' are required", pl: "pola zdarzenia 'office' i 'position' są wymagane" },
    event_int: { en: "event field {key} must be an integer in [0, {limit}]", pl: "pole zdarzenia {key} musi być liczbą całkowitą z [0, {limit}]" },
    event_first: { en: "exactly the first event of a chain (seq 0) has no prev", pl: "tylko pierwsze zdarzenie łańcucha (seq 0) nie ma prev" },
    seen_shape: {
      en: "event field 'seen' must be {'root': ..., 'size': ...} or null",
      pl: "pole zdarzenia 'seen' musi mieć postać {'root': ..., 'size': ...} albo null",
    },
    seen_value: { en: "a seen checkpoint is a tree size and a 32-byte root", pl: "widziany punkt kontrolny to rozmiar drzewa i 32-bajtowy korzeń" },
    // pki.py
    cert_shape: {
      en: "a certificate is {'certificate': {...}, 'signature': '...'}",
      pl: "certyfikat ma postać {'certificate': {...}, 'signature': '...'}",
    },
    cert_format: { en: "not a " + CERT_FORMAT + " certificate", pl: "to nie jest certyfikat " + CERT_FORMAT },
    cert_strings: { en: "certificate fields must be strings", pl: "pola certyfikatu muszą być tekstem" },
    cert_issued: { en: "certificate 'issued' must be a non-negative integer", pl: "pole certyfikatu 'issued' musi być nieujemną liczbą całkowitą" },
    cert_roles_list: { en: "certificate 'roles' must be a list", pl: "pole certyfikatu 'roles' musi być listą" },
    cert_role_unknown: { en: "certificate lists an unknown role in {roles}", pl: "certyfikat wymienia nieznaną rolę w {roles}" },
    identifier: {
      en: "{what} {text} must be 1-64 of A-Z a-z 0-9 . _ - (no spaces)",
      pl: "{what} {text}: wymagane 1-64 znaki A-Z a-z 0-9 . _ - (bez spacji)",
    },
    cert_unit_title: { en: "a certificate names the unit and the position's title", pl: "certyfikat musi podawać komórkę i nazwę stanowiska" },
    cert_lengths: { en: "certificate key or signature has the wrong length", pl: "klucz albo podpis w certyfikacie ma złą długość" },
    cert_roles_order: { en: "certificate roles must be non-empty, sorted and distinct", pl: "role w certyfikacie muszą być niepuste, posortowane i bez powtórzeń" },
    cert_not_signed: {
      en: "certificate of position {position} is not signed by the office CA",
      pl: "certyfikat stanowiska {position} nie jest podpisany kluczem CA urzędu",
    },
    // calendar.py, holidays.py, model.py, casesign.py, paths.py
    date_shape: { en: "{what} {text} is not a date YYYY-MM-DD", pl: "{what} {text}: to nie jest data RRRR-MM-DD" },
    date_no_day: { en: "{what} {text} is not a day of the calendar", pl: "{what} {text}: nie ma takiego dnia w kalendarzu" },
    date_years: { en: "{what} {text} is outside the years 1990-9998", pl: "{what} {text}: poza latami 1990-9998" },
    time_range: { en: "time {ts} is outside the calendar (1970 to 9999-12-29)", pl: "czas {ts} jest poza kalendarzem (od 1970 do 9999-12-29)" },
    holiday_years: {
      en: "Polish public holidays are computed for 1990-9998, not {year}",
      pl: "polskie święta są liczone dla lat 1990-9998, nie {year}",
    },
    retention_9999: {
      en: "the retention period of category {category} ends after 9999",
      pl: "okres przechowywania kategorii {category} kończy się po roku 9999",
    },
    category: {
      en: "archival category {text} is not A, Bc, B<n> or BE<n> (n = 1-999 years, no leading zero)",
      pl: "kategoria archiwalna {text} nie jest A, Bc, B<n> ani BE<n> (n = 1-999 lat, bez zera wiodącego)",
    },
    sign_length: { en: "a case sign must be 1 to 100 characters", pl: "znak sprawy ma od 1 do 100 znaków" },
    sign_shape: {
      en: "case sign {sign} must look like UNIT.CLASS.NUMBER.YEAR (e.g. OR.0012.1.2024)",
      pl: "znak sprawy {sign} musi mieć postać KOMÓRKA.KLASA.NUMER.ROK (np. OR.0012.1.2024)",
    },
    sign_last: { en: "case sign {sign}: {part} is neither a year nor initials", pl: "znak sprawy {sign}: {part} nie jest ani rokiem, ani inicjałami" },
    sign_parts: { en: "case sign {sign} has the wrong number of parts", pl: "znak sprawy {sign} ma złą liczbę części" },
    sign_unit: { en: "case sign {sign}: {part} is not a unit symbol", pl: "znak sprawy {sign}: {part} nie jest symbolem komórki" },
    sign_class: { en: "case sign {sign}: {part} is not a JRWA class", pl: "znak sprawy {sign}: {part} nie jest klasą JRWA" },
    sign_year: { en: "case sign {sign}: {part} is not a four-digit year", pl: "znak sprawy {sign}: {part} nie jest czterocyfrowym rokiem" },
    sign_number: { en: "case sign {sign}: {part} is not a case number", pl: "znak sprawy {sign}: {part} nie jest numerem sprawy" },
    path_list: {
      en: "the case's acceptance path: steps must be a list of at most 9 steps",
      pl: "ścieżka akceptacji sprawy: kroki muszą być listą najwyżej 9 kroków",
    },
    path_table: {
      en: "the case's acceptance path, step {i} must be a table {event, role, unit}",
      pl: "ścieżka akceptacji sprawy, krok {i} musi być tabelą {event, role, unit}",
    },
    path_fields: {
      en: "the case's acceptance path, step {i} has exactly the fields event, role and unit",
      pl: "ścieżka akceptacji sprawy, krok {i} ma dokładnie pola event, role i unit",
    },
    path_event: { en: "the case's acceptance path, step {i}: unknown event {value}", pl: "ścieżka akceptacji sprawy, krok {i}: nieznane zdarzenie {value}" },
    path_not_step: {
      en: "the case's acceptance path, step {i}: {value} is not a cost step nor 'accepted'",
      pl: "ścieżka akceptacji sprawy, krok {i}: {value} nie jest krokiem dokumentu kosztowego ani 'accepted'",
    },
    path_role: { en: "the case's acceptance path, step {i}: unknown role {value}", pl: "ścieżka akceptacji sprawy, krok {i}: nieznana rola {value}" },
    path_unit: {
      en: "the case's acceptance path, step {i}: unit must be a non-empty string (at most 64)",
      pl: "ścieżka akceptacji sprawy, krok {i}: komórka musi być niepustym tekstem (najwyżej 64 znaki)",
    },
    path_mixed: {
      en: "the case's acceptance path mixes cost-document steps with draft acceptance",
      pl: "ścieżka akceptacji sprawy miesza kroki dokumentu kosztowego z akceptacją projektu",
    },
    path_twice: { en: "the case's acceptance path names a cost-document step twice", pl: "ścieżka akceptacji sprawy podaje krok dokumentu kosztowego dwa razy" },
    // rules.py
    r: { en: "{en}", pl: "{pl}" },
  });

  // ---------------------------------------------------------- Python values, as Python prints

  /** repr() of a parsed JSON value (str, int, None, bool, list, dict), as in Python messages. */
  function pyReprValue(v) {
    if (typeof v === "string") return pyRepr(v);
    if (typeof v === "bigint") return v.toString();
    if (v === null || v === undefined) return "None";
    if (v === true) return "True";
    if (v === false) return "False";
    if (Array.isArray(v)) return "[" + v.map(pyReprValue).join(", ") + "]";
    if (v instanceof Map) {
      return "{" + Array.from(v, ([k, x]) => pyRepr(k) + ": " + pyReprValue(x)).join(", ") + "}";
    }
    return String(v);
  }

  /** str() of a parsed JSON value, as an f-string prints it. */
  const pyStr = (v) => (typeof v === "string" ? v : pyReprValue(v));

  /** Python truthiness of a parsed JSON value. */
  function pyTruthy(v) {
    if (v === null || v === undefined || v === false) return false;
    if (typeof v === "string" || Array.isArray(v)) return v.length > 0;
    if (typeof v === "bigint") return v !== 0n;
    if (v instanceof Map) return v.size > 0;
    return true;
  }

  const isDict = (v) => v instanceof Map;
  const isInt = (v) => typeof v === "bigint";
  const isStr = (v) => typeof v === "string";

  // -------------------------------------------------------- canonical.py: strict JSON, encoding

  const JSON_NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;

  /**
   * json.loads with canonical.loads' hooks: objects become Maps (insertion order kept, any key
   * allowed), integers BigInts, duplicate keys / floats / NaN refused with Python's message.
   * Syntax errors say "not valid JSON" (the detail is this parser's, not Python's).
   */
  function parseStrictJson(text, what) {
    let i = 0;
    const n = text.length;
    const syntax = (detail) => malformed("json_invalid", { what: term(what), detail: detail + " (char " + i + ")" });
    const ws = () => {
      while (i < n) {
        const c = text.charCodeAt(i);
        if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
        else break;
      }
    };
    const string = () => {
      i++; // the opening quote
      let out = "";
      let start = i;
      while (true) {
        if (i >= n) throw syntax("Unterminated string");
        const c = text.charCodeAt(i);
        if (c === 0x22) {
          out += text.slice(start, i);
          i++;
          return out;
        }
        if (c < 0x20) throw syntax("Invalid control character");
        if (c !== 0x5c) {
          i++;
          continue;
        }
        out += text.slice(start, i);
        const e = text[i + 1];
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
        if (e !== undefined && has(simple, e)) {
          out += simple[e];
          i += 2;
        } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else {
          throw syntax("Invalid \\escape");
        }
        start = i;
      }
    };
    const value = (depth) => {
      if (depth > MAX_JSON_DEPTH) throw syntax("nested too deeply");
      ws();
      const c = text[i];
      if (c === "{") {
        i++;
        const pairs = [];
        ws();
        if (text[i] === "}") {
          i++;
        } else {
          while (true) {
            ws();
            if (text[i] !== '"') throw syntax("Expecting property name enclosed in double quotes");
            const key = string();
            ws();
            if (text[i] !== ":") throw syntax("Expecting ':' delimiter");
            i++;
            pairs.push([key, value(depth + 1)]);
            ws();
            if (text[i] === ",") {
              i++;
              continue;
            }
            if (text[i] === "}") {
              i++;
              break;
            }
            throw syntax("Expecting ',' delimiter");
          }
        }
        const map = new Map();
        for (const [key, item] of pairs) {
          if (map.has(key)) throw malformed("json_duplicate", { key: pyRepr(key) });
          map.set(key, item);
        }
        return map;
      }
      if (c === "[") {
        i++;
        const list = [];
        ws();
        if (text[i] === "]") {
          i++;
          return list;
        }
        while (true) {
          list.push(value(depth + 1));
          ws();
          if (text[i] === ",") {
            i++;
            continue;
          }
          if (text[i] === "]") {
            i++;
            return list;
          }
          throw syntax("Expecting ',' delimiter");
        }
      }
      if (c === '"') return string();
      for (const constant of ["NaN", "Infinity", "-Infinity"]) {
        if (text.startsWith(constant, i)) throw malformed("json_constant", { text: constant });
      }
      if (c === "-" || (c >= "0" && c <= "9")) {
        JSON_NUMBER.lastIndex = i;
        const m = JSON_NUMBER.exec(text);
        if (m === null) throw syntax("Expecting value");
        if (m[1] !== undefined || m[2] !== undefined) throw malformed("json_float");
        i += m[0].length;
        return BigInt(m[0]);
      }
      for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
        if (text.startsWith(word, i)) {
          i += word.length;
          return v;
        }
      }
      throw syntax("Expecting value");
    };
    const result = value(0);
    ws();
    if (i !== n) throw syntax("Extra data");
    return result;
  }

  /** canonical._check: integers within the signed 64-bit range, with Python's path names. */
  function checkJsonInts(v, where) {
    if (isInt(v)) {
      if (v < INT64_MIN || v > INT64_MAX) throw malformed("json_int_range", { where: where });
    } else if (Array.isArray(v)) {
      v.forEach((item, k) => checkJsonInts(item, where + "[" + k + "]"));
    } else if (isDict(v)) {
      for (const [key, item] of v) checkJsonInts(item, where + "." + key);
    }
  }

  /** canonical.loads: strict UTF-8 JSON text of an object. */
  function loadsStrict(bytes, what) {
    let text;
    try {
      text = decodeUtf8Strict(bytes);
    } catch (exc) {
      throw malformed("json_not_utf8", { what: term(what) });
    }
    const value = parseStrictJson(text, what);
    if (!isDict(value)) throw malformed("json_not_object", { what: term(what) });
    checkJsonInts(value, what);
    return value;
  }

  /** Python's sort of str keys: by code point (UTF-16 order differs above U+FFFF). */
  function codePointKey(u) {
    if (u >= 0xe000) return u - 0x800;
    if (u >= 0xd800 && u <= 0xdfff) return u + 0x2000;
    return u;
  }

  function compareCodePoints(a, b) {
    const n = Math.min(a.length, b.length);
    for (let k = 0; k < n; k++) {
      const x = a.charCodeAt(k);
      const y = b.charCodeAt(k);
      if (x !== y) return codePointKey(x) - codePointKey(y);
    }
    return a.length - b.length;
  }

  /**
   * canonical.encode: json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False).
   * Python escapes exactly what JSON.stringify escapes in a well-formed string (", \, and
   * U+0000-U+001F, with the same short forms and lowercase \u00xx).
   */
  function canonicalText(v) {
    if (v === null) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (isInt(v)) return v.toString();
    if (isStr(v)) return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(canonicalText).join(",") + "]";
    if (isDict(v)) {
      const keys = Array.from(v.keys()).sort(compareCodePoints);
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalText(v.get(k))).join(",") + "}";
    }
    throw new TypeError("no canonical JSON form");
  }

  const canonicalBytes = (v) => utf8(canonicalText(v));

  function sameKeys(map, keys) {
    if (!isDict(map) || map.size !== keys.length) return false;
    return keys.every((k) => map.has(k));
  }

  /** ledger.eod.events.parse_hex_digest */
  function parseHexDigest(text, what) {
    if (!isStr(text) || !LOWER_HEX_DIGEST.test(text)) throw malformed("hex_digest", { what: term(what) });
    return fromHex(text);
  }

  /** ledger.eod.pki.fingerprint: "SHA256:" and the unpadded base64 of the key's SHA-256. */
  async function keyFingerprint(publicKey) {
    return "SHA256:" + b64encode(await sha256(publicKey)).replace(/=+$/, "");
  }

  // ------------------------------------------------------------- holidays.py and calendar.py

  /** holidays.easter_sunday (anonymous Gregorian algorithm), as [year, month, day]. */
  function easterSunday(year) {
    if (year < FIRST_YEAR || year > LAST_YEAR) throw malformed("holiday_years", { year: String(year) });
    const a = year % 19;
    const b = Math.floor(year / 100);
    const c = year % 100;
    const d = Math.floor(b / 4);
    const e = b % 4;
    const f = Math.floor((b + 8) / 25);
    const g = Math.floor((b - f + 1) / 3);
    const h = (19 * a + b - d - g + 15) % 30;
    const i = Math.floor(c / 4);
    const k = c % 4;
    const l = (32 + 2 * e + 2 * i - h - k) % 7;
    const m = Math.floor((a + 11 * h + 22 * l) / 451);
    const x = h + l - 7 * m + 114;
    return new Day(year, Math.floor(x / 31), (x % 31) + 1);
  }

  /** A calendar date (datetime.date): proleptic Gregorian, compared and printed as ISO. */
  class Day {
    constructor(y, m, d) {
      this.y = y;
      this.m = m;
      this.d = d;
    }
    static fromOrdinal(n) {
      const t = new Date(n * 86400000);
      return new Day(t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate());
    }
    get ordinal() {
      const t = new Date(0);
      t.setUTCFullYear(this.y, this.m - 1, this.d);
      t.setUTCHours(0, 0, 0, 0);
      return Math.round(t.getTime() / 86400000);
    }
    plus(days) {
      return Day.fromOrdinal(this.ordinal + days);
    }
    get weekday() {
      return (this.ordinal + 3) % 7; // 1970-01-01 was a Thursday (3, Monday = 0)
    }
    iso() {
      return String(this.y).padStart(4, "0") + "-" + String(this.m).padStart(2, "0") + "-" + String(this.d).padStart(2, "0");
    }
  }

  const holidayCache = new Map();

  /** holidays._holidays: the ISO dates of the public holidays of ``year``. */
  function holidays(year) {
    if (!holidayCache.has(year)) {
      const easter = easterSunday(year);
      const days = [new Day(year, 1, 1)];
      if (year >= 2011) days.push(new Day(year, 1, 6));
      days.push(easter, easter.plus(1), new Day(year, 5, 1), new Day(year, 5, 3), easter.plus(49), easter.plus(60));
      days.push(new Day(year, 8, 15), new Day(year, 11, 1), new Day(year, 11, 11));
      if (year >= 2025) days.push(new Day(year, 12, 24));
      days.push(new Day(year, 12, 25), new Day(year, 12, 26));
      holidayCache.set(year, new Set(days.map((x) => x.iso())));
    }
    return holidayCache.get(year);
  }

  const isWorkingDay = (day) => day.weekday < 5 && !holidays(day.y).has(day.iso());

  function nextWorkingDay(day) {
    while (!isWorkingDay(day)) day = day.plus(1);
    return day;
  }

  const deemedDelivery = (notice) => notice.plus(14);
  const appealDeadline = (delivered) => nextWorkingDay(delivered.plus(14));

  /** calendar.parse_date */
  function parseDate(text, what) {
    if (!isStr(text) || !/^[0-9]{4}-[0-9]{2}-[0-9]{2}$/.test(text)) {
      throw malformed("date_shape", { what: what, text: pyReprValue(text) });
    }
    const [y, m, d] = text.split("-").map(Number);
    const last = m >= 1 && m <= 12 ? new Date(Date.UTC(2000, m, 0)).getUTCDate() : 0;
    const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
    const days = m === 2 ? (leap ? 29 : 28) : last;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > days) throw malformed("date_no_day", { what: what, text: text });
    if (y < FIRST_YEAR || y > LAST_YEAR) throw malformed("date_years", { what: what, text: text });
    return new Day(y, m, d);
  }

  /** calendar.OfficeCalendar: local dates, midnights and times in an IANA zone. */
  class OfficeCalendar {
    constructor(zone) {
      if (!isStr(zone) || !/^[A-Za-z0-9._+-]+(?:\/[A-Za-z0-9._+-]+)*$/.test(zone) || zone.includes("..")) {
        throw malformed("zone_name", { zone: pyReprValue(zone) });
      }
      try {
        this.format = new Intl.DateTimeFormat("en-US", {
          timeZone: zone,
          hourCycle: "h23",
          year: "numeric",
          month: "2-digit",
          day: "2-digit",
          hour: "2-digit",
          minute: "2-digit",
          second: "2-digit",
        });
      } catch (exc) {
        throw malformed("zone_unknown", { zone: pyRepr(zone) });
      }
      this.zone = zone;
    }
    /** [local Day, hours, minutes, seconds, offset in seconds] of POSIX second ``ts``. */
    parts(ts) {
      const p = {};
      for (const part of this.format.formatToParts(new Date(Number(ts) * 1000))) p[part.type] = part.value;
      const y = Number(p.year);
      const m = Number(p.month);
      const d = Number(p.day);
      const hh = Number(p.hour) % 24;
      const mm = Number(p.minute);
      const ss = Number(p.second);
      const asUtc = Date.UTC(y, m - 1, d, hh, mm, ss) / 1000;
      const t = new Date(0);
      t.setUTCFullYear(y, m - 1, d);
      t.setUTCHours(hh, mm, ss, 0);
      return [new Day(y, m, d), hh, mm, ss, t.getTime() / 1000 - Number(ts), asUtc];
    }
    local(ts) {
      if (ts < 0n || ts > MAX_SHOWN) throw malformed("time_range", { ts: ts.toString() });
      return this.parts(ts);
    }
    dateOf(ts) {
      return this.local(ts)[0];
    }
    yearOf(ts) {
      return this.local(ts)[0].y;
    }
    /** zoneinfo's datetime(y, m, d, tzinfo=zone).timestamp() (fold=0). */
    startOfDay(day) {
      const t = new Date(0);
      t.setUTCFullYear(day.y, day.m - 1, day.d);
      t.setUTCHours(0, 0, 0, 0);
      const wall = t.getTime() / 1000;
      // The offset in effect at the wall time, as zoneinfo finds it with fold=0.
      const first = wall - this.parts(BigInt(wall))[4];
      return BigInt(wall - this.parts(BigInt(first))[4]);
    }
    deadlineEnd(day) {
      return this.startOfDay(day.plus(1));
    }
    formatTime(ts) {
      if (ts < 0n || ts > MAX_SHOWN) return ts.toString() + " s after the epoch";
      const [day, hh, mm, ss, offset] = this.parts(ts);
      const two = (x) => String(x).padStart(2, "0");
      const sign = offset < 0 ? "-" : "+";
      const abs = Math.abs(offset);
      return day.iso() + " " + two(hh) + ":" + two(mm) + ":" + two(ss) + " " + sign + two(Math.floor(abs / 3600)) + ":" + two(Math.floor((abs % 3600) / 60));
    }
    destructionAllowedFrom(category, closed) {
      if (category.years === null) return null;
      if (category.text === "Bc") return closed;
      const year = this.yearOf(closed) + 1 + category.years;
      if (year > 9999) throw malformed("retention_9999", { category: category.text });
      return this.startOfDay(new Day(year, 1, 1));
    }
  }

  /** model.parse_category */
  function parseCategory(text) {
    const m = isStr(text) ? CATEGORY.exec(text) : null;
    if (m === null) throw malformed("category", { text: pyReprValue(text) });
    if (text === "A") return { text: text, years: null };
    if (text === "Bc") return { text: text, years: 0 };
    return { text: text, years: Number(m[1] !== undefined ? m[1] : m[2]) };
  }

  /** casesign.parse_case_sign (what the rules need of it: the original, the unit, the class). */
  function parseCaseSign(text) {
    const original = text.replace(/^[\s\x1c-\x1f\x85]+|[\s\x1c-\x1f\x85]+$/g, "");
    if (!original || original.length > 100) throw malformed("sign_length");
    let parts = original.split(".");
    const sign = pyRepr(original);
    if (parts.length < 4 || parts.length > 6) throw malformed("sign_shape", { sign: sign });
    const YEAR = /^(?:19|20|21)[0-9]{2}$/;
    if (!YEAR.test(parts[parts.length - 1])) {
      if (!/^\p{L}{1,10}$/u.test(parts[parts.length - 1])) {
        throw malformed("sign_last", { sign: sign, part: pyRepr(parts[parts.length - 1]) });
      }
      parts = parts.slice(0, -1);
    }
    if (parts.length !== 4 && parts.length !== 5) throw malformed("sign_parts", { sign: sign });
    const unit = parts[0];
    const jrwaClass = parts[1];
    const numbers = parts.slice(2, -1);
    const year = parts[parts.length - 1];
    if (!/^\p{L}(?:[\p{L}\p{N}]|-(?=[\p{L}\p{N}]))*$/u.test(unit)) throw malformed("sign_unit", { sign: sign, part: pyRepr(unit) });
    if (!/^[0-9]{1,4}$/.test(jrwaClass)) throw malformed("sign_class", { sign: sign, part: pyRepr(jrwaClass) });
    if (!YEAR.test(year)) throw malformed("sign_year", { sign: sign, part: pyRepr(year) });
    for (const number of numbers) {
      if (!/^[1-9][0-9]{0,8}$/.test(number)) throw malformed("sign_number", { sign: sign, part: pyRepr(number) });
    }
    return { original: original, unit: unit, jrwaClass: jrwaClass };
  }

  /** paths.parse_path_json */
  function parsePath(raw) {
    if (!Array.isArray(raw) || raw.length > 9) throw malformed("path_list");
    const steps = raw.map((item, k) => {
      const i = String(k + 1);
      if (!isDict(item)) throw malformed("path_table", { i: i });
      if (!sameKeys(item, ["event", "role", "unit"])) throw malformed("path_fields", { i: i });
      const event = item.get("event");
      if (!isStr(event) || !has(EVENT_TYPES, event)) throw malformed("path_event", { i: i, value: pyReprValue(event) });
      if (!COST_STEPS.includes(event) && event !== "accepted") throw malformed("path_not_step", { i: i, value: pyRepr(event) });
      const role = item.get("role");
      if (!isStr(role) || !has(ROLE_POLISH, role)) throw malformed("path_role", { i: i, value: pyReprValue(role) });
      const unit = item.get("unit");
      if (unit !== null && (!isStr(unit) || !unit || unit.length > 64)) throw malformed("path_unit", { i: i });
      return { event: event, role: role, unit: unit };
    });
    const kinds = new Set(steps.map((s) => COST_STEPS.includes(s.event)));
    if (kinds.size > 1) throw malformed("path_mixed");
    const cost = steps.filter((s) => COST_STEPS.includes(s.event)).map((s) => s.event);
    if (new Set(cost).size !== cost.length) throw malformed("path_twice");
    return steps;
  }

  // --------------------------------------------------------------------------------- pki.py

  function checkIdentifier(text, what) {
    if (!isStr(text) || !IDENTIFIER.test(text)) throw malformed("identifier", { what: term(what), text: pyReprValue(text) });
  }

  /** PositionCertificate.from_json and __post_init__, in Python's order. */
  function parseCertificate(obj) {
    const body = obj.get("certificate");
    if (!sameKeys(obj, ["certificate", "signature"]) || !isDict(body)) throw malformed("cert_shape");
    if (!sameKeys(body, CERT_FIELDS) || body.get("format") !== CERT_FORMAT) throw malformed("cert_format");
    const strings = ["office", "position", "public_key", "title", "unit"];
    if (!strings.every((k) => isStr(body.get(k))) || !isStr(obj.get("signature"))) throw malformed("cert_strings");
    const issued = body.get("issued");
    if (!isInt(issued) || issued < 0n) throw malformed("cert_issued");
    const rawRoles = body.get("roles");
    if (!Array.isArray(rawRoles)) throw malformed("cert_roles_list");
    if (!rawRoles.every((r) => isStr(r) && has(ROLE_POLISH, r))) throw malformed("cert_role_unknown", { roles: pyReprValue(rawRoles) });
    const publicKey = b64decodeStrict(body.get("public_key"), "certificate public key");
    const signature = b64decodeStrict(obj.get("signature"), "certificate signature");
    const cert = {
      office: body.get("office"),
      position: body.get("position"),
      unit: body.get("unit"),
      title: body.get("title"),
      roles: rawRoles.slice(),
      publicKey: publicKey,
      issued: issued,
      signature: signature,
    };
    checkIdentifier(cert.office, "office id");
    checkIdentifier(cert.position, "position id");
    if (!cert.unit || !cert.title) throw malformed("cert_unit_title");
    if (publicKey.length !== PUBLIC_KEY_SIZE || signature.length !== SIGNATURE_SIZE) throw malformed("cert_lengths");
    const sorted = Array.from(new Set(cert.roles)).sort();
    if (!cert.roles.length || sorted.join("\n") !== cert.roles.join("\n")) throw malformed("cert_roles_order");
    return cert;
  }

  /** PositionCertificate.body(): what the office CA signed. */
  function certificateBody(cert) {
    return new Map([
      ["format", CERT_FORMAT],
      ["issued", cert.issued],
      ["office", cert.office],
      ["position", cert.position],
      ["public_key", b64encode(cert.publicKey)],
      ["roles", cert.roles.slice()],
      ["title", cert.title],
      ["unit", cert.unit],
    ]);
  }

  async function verifyCertificate(cert, caKey) {
    const message = concat(utf8(CERT_SIGNING_DOMAIN), canonicalBytes(certificateBody(cert)));
    try {
      await verifyEd25519(caKey, message, cert.signature);
    } catch (exc) {
      if (exc instanceof LedgerError && exc.kind === "verification") throw failed("cert_not_signed", { position: pyRepr(cert.position) });
      throw exc;
    }
  }

  // ----------------------------------------------------------------------------- records.py

  function recordSignature(obj, what) {
    const text = obj.get("signature");
    if (!isStr(text)) throw malformed("signature_text", { what: what });
    const raw = b64decodeStrict(text, what + " signature");
    if (raw.length !== SIGNATURE_SIZE) throw malformed("signature_size", { what: what });
    return raw;
  }

  /** records.OfficeRecord.from_json, with its self-signature. */
  async function parseOfficeRecord(obj) {
    if (!sameKeys(obj, ["office", "signature"])) throw malformed("office_shape");
    const body = obj.get("office");
    if (!sameKeys(body, OFFICE_FIELDS)) throw malformed("office_fields");
    if (body.get("format") !== OFFICE_FORMAT) throw malformed("office_format");
    if (!OFFICE_FIELDS.every((k) => isStr(body.get(k)))) throw malformed("office_strings");
    const key = b64decodeStrict(body.get("ca_public_key"), "CA key");
    if (key.length !== PUBLIC_KEY_SIZE) throw malformed("ca_key_size");
    checkIdentifier(body.get("id"), "office id");
    const calendar = new OfficeCalendar(body.get("zone"));
    const signature = recordSignature(obj, "office record");
    const message = concat(utf8(OFFICE_DOMAIN), canonicalBytes(body));
    try {
      await verifyEd25519(key, message, signature);
    } catch (exc) {
      if (exc instanceof LedgerError && exc.kind === "verification") throw failed("office_not_signed");
      throw exc;
    }
    return { office: body.get("id"), name: body.get("name"), zone: body.get("zone"), caKey: key, calendar: calendar };
  }

  /** records.TrailHead.from_json, and its hash. */
  async function parseHead(obj) {
    if (!sameKeys(obj, ["head", "signature"])) throw malformed("head_shape");
    const body = obj.get("head");
    if (!sameKeys(body, HEAD_FIELDS) || body.get("format") !== HEAD_FORMAT) throw malformed("head_format");
    for (const value of [body.get("count"), body.get("time")]) if (!isInt(value) || value < 0n) throw malformed("head_ints");
    const kase = body.get("case");
    if (kase !== null && (!isStr(kase) || !kase)) throw malformed("head_case");
    if (!isStr(body.get("office"))) throw malformed("head_office_type");
    const head = {
      office: body.get("office"),
      chain: parseHexDigest(body.get("chain"), "the trail head's chain"),
      count: body.get("count"),
      last: parseHexDigest(body.get("last"), "the trail head's last event"),
      signature: recordSignature(obj, "trail head"),
      signingBytes: concat(utf8(HEAD_DOMAIN), canonicalBytes(body)),
    };
    head.hash = await sha256(canonicalBytes(new Map([["head", body], ["signature", b64encode(head.signature)]])));
    return head;
  }

  // ------------------------------------------------------------------------------ events.py

  function optStr(obj, key) {
    const value = obj.get(key);
    if (value !== null && (!isStr(value) || !value)) throw malformed("event_opt_str", { key: pyRepr(key) });
    return value;
  }

  function eventInt(obj, key, limit) {
    const value = obj.get(key);
    if (!isInt(value) || value < 0n || value > limit) throw malformed("event_int", { key: pyRepr(key), limit: limit.toString() });
    return value;
  }

  /** events.Seen.from_json */
  function parseSeen(obj) {
    if (!sameKeys(obj, ["root", "size"])) throw malformed("seen_shape");
    const size = obj.get("size");
    const root = obj.get("root");
    if (!isInt(size) || !isStr(root)) throw malformed("seen_shape");
    const raw = b64decodeStrict(root, "seen checkpoint root");
    if (size < 0n || size > INT64_MAX || raw.length !== 32) throw malformed("seen_value");
    return { size: size, root: raw };
  }

  /** EventRecord.from_json and __post_init__, in Python's order. */
  function parseRecord(obj) {
    if (!sameKeys(obj, EVENT_FIELDS)) throw malformed("event_fields");
    if (obj.get("format") !== EVENT_FORMAT) throw malformed("event_format", { value: pyReprValue(obj.get("format")) });
    const type = obj.get("type");
    if (!isStr(type) || !has(EVENT_TYPES, type)) throw malformed("event_type", { value: pyReprValue(type) });
    if (!isDict(obj.get("data"))) throw malformed("event_data");
    const office = optStr(obj, "office");
    const position = optStr(obj, "position");
    if (office === null || position === null) throw malformed("event_required");
    const prevText = obj.get("prev");
    const docText = obj.get("document");
    const declared = obj.get("declared") === null ? null : eventInt(obj, "declared", INT64_MAX);
    const seq = eventInt(obj, "seq", MAX_SEQ);
    const prev = prevText === null ? null : parseHexDigest(prevText, "prev");
    const kase = optStr(obj, "case");
    const doc = docText === null ? null : parseHexDigest(docText, "document");
    const time = eventInt(obj, "time", INT64_MAX);
    const seen = obj.get("seen") === null ? null : parseSeen(obj.get("seen"));
    if ((seq === 0n) !== (prev === null)) throw malformed("event_first");
    return { office: office, seq: seq, prev: prev, type: type, case: kase, document: doc, position: position, time: time, data: obj.get("data"), seen: seen, declared: declared };
  }

  /** EventRecord.to_json */
  function recordJson(r) {
    return new Map([
      ["case", r.case],
      ["data", r.data],
      ["declared", r.declared],
      ["document", r.document === null ? null : toHex(r.document)],
      ["format", EVENT_FORMAT],
      ["office", r.office],
      ["position", r.position],
      ["prev", r.prev === null ? null : toHex(r.prev)],
      ["seen", r.seen === null ? null : new Map([["root", b64encode(r.seen.root)], ["size", r.seen.size]])],
      ["seq", r.seq],
      ["time", r.time],
      ["type", r.type],
    ]);
  }

  /** SignedEvent.from_json; also its event hash (SHA-256 of the canonical signed object). */
  async function parseSignedEvent(obj) {
    if (!sameKeys(obj, ["event", "signature"]) || !isDict(obj.get("event"))) throw malformed("signed_event_shape");
    if (!isStr(obj.get("signature"))) throw malformed("event_signature_text");
    const record = parseRecord(obj.get("event"));
    const signature = b64decodeStrict(obj.get("signature"), "event signature");
    if (signature.length !== SIGNATURE_SIZE) throw malformed("event_signature_size");
    const recordBytes = canonicalBytes(recordJson(record));
    const signed = canonicalBytes(new Map([["event", recordJson(record)], ["signature", b64encode(signature)]]));
    return { record: record, signature: signature, signingBytes: concat(utf8(EVENT_SIGNING_DOMAIN), recordBytes), hash: await sha256(signed) };
  }

  // ------------------------------------------------------------------------------ timing.py

  /** timing.verify_checkpoint: a cosigned checkpoint note under the policy, and its time. */
  async function verifyCheckpoint(text, policy) {
    if (policy.quorum === NONE) throw failed("no_quorum_policy");
    const note = parseNote(text);
    const checkpoint = parseCheckpointBody(note.text);
    const verified = await openNote(note, policyVerifiers(policy));
    evaluatePolicy(policy, verified.map((v) => v.verifier), checkpoint.origin);
    const validators = new Map(quorumWitnesses(policy).map((w) => [w.verifier.vkey, w.name]));
    const stamps = new Map();
    for (const s of verified) {
      if (validators.has(s.verifier.vkey) && s.timestamp !== null) stamps.set(validators.get(s.verifier.vkey), s.timestamp);
    }
    return { size: checkpoint.size, root: checkpoint.root, time: policyTimeBound(policy, stamps) };
  }

  // -------------------------------------------------------------------------------- rules.py

  /** A WorkflowError of rules.py: English exactly as Python words it, and Polish. */
  const wf = (en, pl) => failed("r", { en: en, pl: pl });

  function newCaseState() {
    return {
      seq: 0n, head: null, lastTime: 0n, case: null, unit: null, category: null, kind: null, path: [], cost: false,
      invoice: null, items: [], assigner: null, assignee: null, officer: null, method: null, deadline: null,
      subDeadline: null, attachments: 0, draft: null, submitter: null, accepted: 0, acceptors: [], signed: [],
      costDone: [], dispatchedAt: null, dispatchedOn: null, deliveredOn: null, closed: false, closedBefore: null,
      archived: false, transferred: false, destroyed: false,
    };
  }

  const levels = (s) => (s.cost ? 0 : s.path.length);
  const isBc = (s) => s.category !== null && s.category.text === "Bc";
  const roleTerms = (role) => ROLE_POLISH[role];

  function roleError(cert, type, role) {
    const t = eventTerm(type);
    return wf(
      "position " + pyRepr(cert.position) + " (" + cert.title + ") may not record " + t.en + ": it needs the role " + pyRepr(role) + " (" + roleTerms(role) + ")",
      "stanowisko " + pyRepr(cert.position) + " (" + cert.title + ") nie może zapisać zdarzenia " + t.pl + ": wymaga roli " + pyRepr(role) + " (" + roleTerms(role) + ")"
    );
  }

  function stepAllowed(step, cert, type, what) {
    if (!cert.roles.includes(step.role)) throw roleError(cert, type, step.role);
    if (step.unit !== null && cert.unit !== step.unit) {
      throw wf(
        what.en + " belongs to unit " + step.unit + "; position " + pyRepr(cert.position) + " is in unit " + cert.unit,
        what.pl + " należy do komórki " + step.unit + "; stanowisko " + pyRepr(cert.position) + " jest w komórce " + cert.unit
      );
    }
  }

  // Data fields (rules._str, _req, _int, _bool, _only, _date)
  function dStr(data, key, optional) {
    const value = data.has(key) ? data.get(key) : null;
    if (value === null && optional) return null;
    if (!isStr(value) || !value || value.length > 500) {
      throw wf("data field " + pyRepr(key) + " must be a non-empty string (max 500)", "pole danych " + pyRepr(key) + " musi być niepustym tekstem (najwyżej 500 znaków)");
    }
    return value;
  }
  const dReq = (data, key) => dStr(data, key, false);
  function dInt(data, key, low, high) {
    const value = data.has(key) ? data.get(key) : null;
    if (!isInt(value) || value < BigInt(low) || value > BigInt(high)) {
      throw wf("data field " + pyRepr(key) + " must be an integer in [" + low + ", " + high + "]", "pole danych " + pyRepr(key) + " musi być liczbą całkowitą z [" + low + ", " + high + "]");
    }
    return Number(value);
  }
  function dBool(data, key) {
    const value = data.has(key) ? data.get(key) : false;
    if (value !== true && value !== false) throw wf("data field " + pyRepr(key) + " must be true or false", "pole danych " + pyRepr(key) + " musi mieć wartość true albo false");
    return value;
  }
  function only(data, ...allowed) {
    const unknown = Array.from(data.keys()).filter((k) => !allowed.includes(k)).sort(compareCodePoints);
    if (unknown.length) throw wf("unknown data fields: " + unknown.join(", "), "nieznane pola danych: " + unknown.join(", "));
  }
  const dDate = (data, key) => parseDate(dReq(data, key), "data field " + pyRepr(key));
  const T = (type) => eventTerm(type);

  function needDocument(event) {
    if (event.record.document === null) {
      const t = T(event.record.type);
      throw wf(t.en + " needs the document's digest", t.pl + ": wymaga skrótu dokumentu");
    }
    return event.record.document;
  }

  function needOpenCase(state, event) {
    if (state.case === null) {
      const t = T(event.record.type);
      throw wf(t.en + " needs an open case (założenie sprawy)", t.pl + ": wymaga założonej sprawy");
    }
  }

  const inList = (list, bytes) => list.some((x) => equalBytes(x, bytes));

  /** rules._eform: the outcome of an e-form's XAdES verification. */
  function checkEform(value) {
    const keys = value !== null && typeof value === "object" && !Array.isArray(value) ? Object.keys(value).sort() : null;
    const bad = () => wf(
      "data field 'eform' must be {valid, signer, certificate, reason}",
      "pole 'eform' musi mieć postać {valid, signer, certificate, reason}"
    );
    if (keys === null || keys.join(",") !== "certificate,reason,signer,valid") throw bad();
    if (typeof value.valid !== "boolean") throw bad();
    if (!isStr(value.reason) || value.reason.length === 0 || value.reason.length > 500) throw bad();
    for (const key of ["signer", "certificate"]) {
      const v = value[key];
      if (v !== null && (!isStr(v) || v.length === 0 || v.length > 500)) throw bad();
    }
    if (value.certificate !== null && !/^[0-9a-f]{64}$/.test(value.certificate)) throw bad();
  }

  function ruleRegistered(state, event) {
    const data = event.record.data;
    only(data, "direction", "register", "channel", "kind", "attachments", "sender_ref", "eform");
    const document = needDocument(event);
    const direction = dReq(data, "direction");
    if (!DIRECTIONS.includes(direction)) throw wf("direction must be one of " + DIRECTIONS.join(", "), "kierunek musi być jednym z: " + DIRECTIONS.join(", "));
    const register = dReq(data, "register");
    dReq(data, "channel");
    const kind = dReq(data, "kind");
    if (kind !== "letter" && kind !== "invoice") throw wf("kind must be 'letter' or 'invoice'", "rodzaj musi być 'letter' albo 'invoice'");
    dInt(data, "attachments", 0, 10000);
    dStr(data, "sender_ref", true);
    if (has(data, "eform")) checkEform(data.eform);
    if (state.items.includes(register)) throw wf("item " + register + " is already registered in this chain", "przesyłka " + register + " jest już zarejestrowana w tym łańcuchu");
    if (state.seq > 0n && state.case === null) {
      throw wf("a further item can be registered only into an open case", "kolejną przesyłkę można zarejestrować tylko w założonej sprawie");
    }
    let invoice = state.invoice;
    if (kind === "invoice") {
      if (invoice !== null) throw wf("a cost case holds one invoice", "sprawa kosztowa obejmuje jedną fakturę");
      invoice = document;
    }
    return { ...state, items: [...state.items, register], invoice: invoice };
  }

  function ruleAssigned(state, event, facts) {
    const r = event.record;
    const data = r.data;
    only(data, "to", "method", "deadline");
    const to = dReq(data, "to");
    if (!facts.positions.has(to)) {
      throw wf("assignment (dekretacja) to " + pyRepr(to) + ": no such position is certified in this office", "dekretacja na " + pyRepr(to) + ": takie stanowisko nie ma certyfikatu w tym urzędzie");
    }
    const method = dStr(data, "method", true);
    const deadline = dStr(data, "deadline", true);
    if (deadline !== null) {
      const end = facts.calendar.deadlineEnd(parseDate(deadline, "deadline"));
      if (r.time >= end) {
        const when = facts.calendar.formatTime(end);
        throw wf("the deadline " + deadline + " has passed: it ended at " + when, "termin " + deadline + " już minął: skończył się " + when);
      }
    }
    const actor = r.position;
    const officer = state.case !== null ? to : state.officer;
    if (state.assigner === null) return { ...state, assigner: actor, assignee: to, officer: officer, method: method, deadline: deadline };
    if (actor === state.assigner) {
      return {
        ...state,
        assignee: to,
        officer: officer,
        method: method !== null ? method : state.method,
        deadline: deadline !== null ? deadline : state.deadline,
        subDeadline: null,
      };
    }
    if (actor !== state.assignee) {
      throw wf(
        "re-assignment (dekretacja) by " + pyRepr(actor) + ", who is neither the original assigner " + pyReprValue(state.assigner) + " nor the current assignee " + pyReprValue(state.assignee),
        "ponowna dekretacja przez " + pyRepr(actor) + ", które nie jest ani pierwotnym dekretującym " + pyReprValue(state.assigner) + ", ani obecnym adresatem dekretacji " + pyReprValue(state.assignee)
      );
    }
    if (method !== null && method !== state.method) {
      throw wf(
        "only the original assigner " + pyReprValue(state.assigner) + " may change the method of a dekretacja",
        "tylko pierwotny dekretujący " + pyReprValue(state.assigner) + " może zmienić sposób załatwienia"
      );
    }
    let sub = state.subDeadline;
    if (deadline !== null) {
      for (const above of [state.deadline, state.subDeadline]) {
        if (above !== null && deadline > above) {
          throw wf(
            "a lower-level assignment (dekretacja wtórna) may set a deadline no later than the one above it (" + above + "), not " + deadline,
            "dekretacja wtórna może wyznaczyć termin nie późniejszy niż termin wyższego szczebla (" + above + "), a nie " + deadline
          );
        }
      }
      sub = deadline;
    }
    return { ...state, assignee: to, officer: officer, subDeadline: sub };
  }

  function ruleCaseOpened(state, event) {
    const r = event.record;
    const data = r.data;
    only(data, "category", "category_reason", "jrwa", "kind", "path");
    if (r.case === null) throw wf("opening a case needs its case sign (znak sprawy)", "założenie sprawy wymaga znaku sprawy");
    const sign = parseCaseSign(r.case);
    if (sign.original !== r.case) throw wf("the case sign must be written without surrounding spaces", "znak sprawy należy zapisać bez otaczających spacji");
    const jrwa = data.has("jrwa") ? data.get("jrwa") : null;
    if (!isDict(jrwa) || !sameKeys(jrwa, ["class", "title", "category"])) {
      throw wf("data field 'jrwa' must be {'class', 'title', 'category'}", "pole danych 'jrwa' musi mieć postać {'class', 'title', 'category'}");
    }
    only(jrwa, "class", "title", "category");
    if (dReq(jrwa, "class") !== sign.jrwaClass) {
      throw wf("the case sign's class " + sign.jrwaClass + " is not the JRWA class " + jrwa.get("class"), "klasa w znaku sprawy " + sign.jrwaClass + " nie jest klasą JRWA " + jrwa.get("class"));
    }
    dReq(jrwa, "title");
    const listed = parseCategory(dReq(jrwa, "category"));
    const category = parseCategory(dReq(data, "category"));
    const reason = dStr(data, "category_reason", true);
    if (category.text !== listed.text && reason === null) {
      throw wf(
        "category " + category.text + " differs from the JRWA class's " + listed.text + ": give the reason (category_reason)",
        "kategoria " + category.text + " różni się od kategorii klasy JRWA " + listed.text + ": podaj powód (category_reason)"
      );
    }
    if (category.text === listed.text && reason !== null) {
      throw wf("a category_reason is given only with a category the class lacks", "powód (category_reason) podaje się tylko przy kategorii innej niż kategoria klasy");
    }
    const kind = dReq(data, "kind");
    const path = parsePath(data.has("path") ? data.get("path") : null);
    const cost = path.length > 0 && COST_STEPS.includes(path[0].event);
    if (state.invoice !== null && !cost) throw wf("an invoice's case must follow a cost-document path", "sprawa faktury musi iść ścieżką dokumentu kosztowego");
    if (state.assignee !== null && r.position !== state.assignee) {
      throw wf(
        "the case is opened by the assignee " + pyRepr(state.assignee) + " of the dekretacja, not by " + pyRepr(r.position),
        "sprawę zakłada adresat dekretacji " + pyRepr(state.assignee) + ", a nie " + pyRepr(r.position)
      );
    }
    return {
      ...state, case: sign.original, unit: sign.unit, category: category, kind: kind, path: path, cost: cost,
      officer: r.position, assignee: state.assignee || r.position,
    };
  }

  function ruleAttached(state, event) {
    needOpenCase(state, event);
    only(event.record.data, "kind");
    dReq(event.record.data, "kind");
    needDocument(event);
    return { ...state, attachments: state.attachments + 1 };
  }

  function ruleSubmitted(state, event) {
    needOpenCase(state, event);
    only(event.record.data);
    if (state.cost) {
      throw wf(
        "a cost case follows its cost-document path; drafts go to cases with an acceptance path",
        "sprawa kosztowa idzie ścieżką dokumentu kosztowego; projekty składa się w sprawach ze ścieżką akceptacji"
      );
    }
    if (state.draft !== null) throw wf("a draft is already awaiting acceptance (akceptacja)", "projekt już czeka na akceptację");
    return { ...state, draft: needDocument(event), submitter: event.record.position, accepted: 0, acceptors: [] };
  }

  function pendingDraft(state, event) {
    if (state.draft === null) {
      const t = T(event.record.type);
      throw wf(t.en + " needs a draft submitted for acceptance", t.pl + ": wymaga projektu przekazanego do akceptacji");
    }
    if (event.record.document !== null && !equalBytes(event.record.document, state.draft)) {
      throw wf("the document is not the draft submitted for acceptance", "dokument nie jest projektem przekazanym do akceptacji");
    }
  }

  function pendingLevel(state) {
    if (state.accepted >= levels(state)) {
      throw wf(
        "the draft is accepted at " + state.accepted + " of " + levels(state) + " levels; no level awaits acceptance",
        "projekt zaakceptowano na " + state.accepted + " z " + levels(state) + " poziomów; żaden poziom nie czeka na akceptację"
      );
    }
    return state.path[state.accepted];
  }

  const levelWhat = (n) => ({ en: "acceptance at level " + n, pl: "akceptacja na poziomie " + n });

  function ruleAccepted(state, event, facts) {
    pendingDraft(state, event);
    only(event.record.data, "level");
    const level = dInt(event.record.data, "level", 1, 9);
    if (level !== state.accepted + 1 || level > levels(state)) {
      throw wf(
        "acceptance at level " + level + ": the draft is accepted at " + state.accepted + " of " + levels(state) + " levels",
        "akceptacja na poziomie " + level + ": projekt zaakceptowano na " + state.accepted + " z " + levels(state) + " poziomów"
      );
    }
    const step = pendingLevel(state);
    stepAllowed(step, facts.cert, "accepted", levelWhat(level));
    const actor = event.record.position;
    if (actor === state.submitter || state.acceptors.includes(actor)) {
      throw wf("position " + pyRepr(actor) + " already submitted or accepted this draft", "stanowisko " + pyRepr(actor) + " już przekazało albo zaakceptowało ten projekt");
    }
    return { ...state, accepted: level, acceptors: [...state.acceptors, actor] };
  }

  function ruleRejected(state, event, facts) {
    pendingDraft(state, event);
    only(event.record.data, "reason");
    dReq(event.record.data, "reason");
    const step = pendingLevel(state);
    stepAllowed(step, facts.cert, "rejected", levelWhat(state.accepted + 1));
    return { ...state, draft: null, submitter: null, accepted: 0, acceptors: [] };
  }

  function ruleSigned(state, event) {
    if (state.draft === null) throw wf("signature (podpis) before acceptance: no draft was accepted", "podpis przed akceptacją: żaden projekt nie został zaakceptowany");
    only(event.record.data, "draft");
    const draft = parseHexDigest(event.record.data.has("draft") ? event.record.data.get("draft") : null, "data field 'draft'");
    if (!equalBytes(draft, state.draft)) throw wf("the signed draft is not the draft submitted for acceptance", "podpisany projekt nie jest projektem przekazanym do akceptacji");
    if (state.accepted < levels(state)) {
      throw wf(
        "signature (podpis) before acceptance: the draft is accepted at " + state.accepted + " of " + levels(state) + " levels",
        "podpis przed akceptacją: projekt zaakceptowano na " + state.accepted + " z " + levels(state) + " poziomów"
      );
    }
    return { ...state, signed: [...state.signed, needDocument(event)], draft: null, submitter: null, accepted: 0, acceptors: [] };
  }

  const pathText = (path) => path.map((s) => EVENT_TYPES[s.event][1]).join(" → ");

  function ruleCostStep(state, event, facts) {
    const kind = event.record.type;
    const t = T(kind);
    needOpenCase(state, event);
    if (!state.cost) throw wf(t.en + " applies to cases with a cost-document path only", t.pl + ": dotyczy tylko spraw ze ścieżką dokumentu kosztowego");
    const events = state.path.map((s) => s.event);
    if (!events.includes(kind)) {
      throw wf(t.en + " is not a step of this case's path (" + pathText(state.path) + ")", t.pl + ": to nie jest krok ścieżki tej sprawy (" + pathText(state.path) + ")");
    }
    const index = events.indexOf(kind);
    const done = state.costDone.length;
    if (done > index) throw wf(t.en + " was already recorded", t.pl + ": już zapisano");
    if (done < index) {
      const p = T(events[index - 1]);
      throw wf(t.en + " must come after " + p.en + ", which is not recorded yet", t.pl + ": musi nastąpić po kroku " + p.pl + ", którego jeszcze nie zapisano");
    }
    stepAllowed(state.path[index], facts.cert, kind, t);
    const document = needDocument(event);
    if (state.invoice !== null && !equalBytes(document, state.invoice)) throw wf(t.en + " must concern the registered invoice", t.pl + ": musi dotyczyć zarejestrowanej faktury");
    if (kind === "substantive-check" && state.attachments === 0) {
      throw wf(
        "a cost document needs its attachment (contract or order) before the substantive check",
        "dokument kosztowy wymaga załącznika (umowy lub zamówienia) przed kontrolą merytoryczną"
      );
    }
    if (kind === "account-coding") {
      only(event.record.data, "accounts");
      dReq(event.record.data, "accounts");
    } else {
      only(event.record.data, "note");
      dStr(event.record.data, "note", true);
    }
    const actor = event.record.position;
    for (const [previous, who] of state.costDone) {
      if (who === actor) {
        const p = T(previous);
        throw wf(
          "position " + pyRepr(actor) + " already did the " + p.en + "; " + t.en + " must be done by a different position",
          "stanowisko " + pyRepr(actor) + " już wykonało krok " + p.pl + "; " + t.pl + " musi wykonać inne stanowisko"
        );
      }
    }
    return { ...state, costDone: [...state.costDone, [kind, actor]], invoice: state.invoice !== null ? state.invoice : document };
  }

  function ruleDispatched(state, event, facts) {
    needOpenCase(state, event);
    only(event.record.data, "channel", "register");
    dReq(event.record.data, "channel");
    dReq(event.record.data, "register");
    if (!inList(state.signed, needDocument(event))) throw wf("dispatch (wysyłka) of a document that was not signed (podpis)", "wysyłka dokumentu, którego nie podpisano");
    return { ...state, dispatchedAt: event.record.time, dispatchedOn: facts.calendar.dateOf(event.record.time).iso() };
  }

  function ruleReceipt(state, event) {
    only(event.record.data, "kind");
    const kind = dReq(event.record.data, "kind");
    needDocument(event);
    if (!RECEIPT_KINDS.includes(kind)) throw wf("receipt kind must be one of " + RECEIPT_KINDS.join(", "), "rodzaj poświadczenia musi być jednym z: " + RECEIPT_KINDS.join(", "));
    if (kind === "UPP" && !state.items.length) throw wf("a UPP confirms a registered item; none is registered", "UPP poświadcza zarejestrowaną przesyłkę; żadnej nie zarejestrowano");
    if (kind !== "UPP" && state.dispatchedAt === null) throw wf("a " + kind + " confirms a dispatch (wysyłka); none is recorded", kind + " poświadcza wysyłkę; żadnej nie zapisano");
    return state;
  }

  function ruleDelivered(state, event, facts) {
    const r = event.record;
    const data = r.data;
    if (state.dispatchedOn === null) throw wf("delivery (doręczenie) before any dispatch (wysyłka)", "doręczenie przed jakąkolwiek wysyłką");
    const calendar = facts.calendar;
    let day;
    if (dBool(data, "deemed")) {
      only(data, "deemed", "notice");
      const notice = dDate(data, "notice");
      if (notice.iso() < state.dispatchedOn) throw wf("the first notice (awizo) predates the dispatch", "pierwsze awizo jest wcześniejsze niż wysyłka");
      day = deemedDelivery(notice);
      const lapse = calendar.deadlineEnd(day);
      if (r.time < lapse) {
        const when = calendar.formatTime(lapse);
        throw wf(
          "deemed delivery (doręczenie zastępcze) with the lapse of the 14th day after the first notice: not before " + when,
          "doręczenie zastępcze z upływem 14. dnia od pierwszego awizo: nie przed " + when
        );
      }
    } else {
      only(data, "deemed", "date");
      day = calendar.dateOf(r.time);
      if (data.has("date")) {
        const given = dDate(data, "date");
        if (given.iso() > day.iso()) throw wf("the delivery date " + given.iso() + " is after its recording", "data doręczenia " + given.iso() + " jest późniejsza niż jej zapis");
        day = given;
      }
      if (day.iso() < state.dispatchedOn) throw wf("the delivery date predates the dispatch (wysyłka)", "data doręczenia jest wcześniejsza niż wysyłka");
    }
    return { ...state, deliveredOn: day.iso() };
  }

  function ruleClosed(state, event, facts) {
    needOpenCase(state, event);
    only(event.record.data);
    if (state.draft !== null) throw wf("a draft still awaits acceptance; close the case after it is decided", "projekt wciąż czeka na akceptację; zakończ sprawę po decyzji");
    if (state.cost && state.costDone.length < state.path.length) {
      const last = T(state.path[state.path.length - 1].event);
      throw wf("a cost case closes after the " + last.en, "sprawę kosztową kończy się po kroku " + last.pl);
    }
    return { ...state, closed: true, closedBefore: facts.proven.before };
  }

  function ruleReopened(state, event) {
    only(event.record.data, "reason");
    dReq(event.record.data, "reason");
    if (!state.closed) throw wf("only a closed case can be reopened (wznowienie sprawy)", "wznowić można tylko zakończoną sprawę");
    return { ...state, closed: false, closedBefore: null };
  }

  function ruleArchived(state, event) {
    only(event.record.data);
    if (!state.closed) throw wf("only a closed case (zakończenie sprawy) goes to the office archive", "do archiwum zakładowego trafia tylko zakończona sprawa");
    if (isBc(state)) {
      throw wf(
        "category Bc is destroyed in the unit that made it, without passing through the office archive",
        "dokumentację kategorii Bc brakuje się w komórce, która ją wytworzyła, bez przekazywania do archiwum zakładowego"
      );
    }
    return { ...state, archived: true };
  }

  function ruleDestroyed(state, event, facts) {
    only(event.record.data, "consent");
    const category = state.category;
    if (category === null || !state.closed) throw wf("destruction (brakowanie) only of a closed case", "brakowanie tylko zakończonej sprawy");
    if (category.years === null) {
      throw wf(
        "category A records are kept forever and go to the state archive; they are never destroyed (brakowanie)",
        "materiały archiwalne kategorii A przechowuje się wieczyście i przekazuje do archiwum państwowego; nigdy nie podlegają brakowaniu"
      );
    }
    if (isBc(state)) {
      if (facts.cert.unit !== state.unit) {
        throw wf(
          "category Bc is destroyed in the unit that made it (" + state.unit + "); position " + pyRepr(facts.cert.position) + " is in unit " + facts.cert.unit,
          "dokumentację kategorii Bc brakuje komórka, która ją wytworzyła (" + state.unit + "); stanowisko " + pyRepr(facts.cert.position) + " jest w komórce " + facts.cert.unit
        );
      }
    } else if (!state.archived) {
      throw wf(
        "category " + category.text + ": destruction (brakowanie) only from the office archive",
        "kategoria " + category.text + ": brakowanie tylko z archiwum zakładowego"
      );
    }
    dReq(event.record.data, "consent");
    const calendar = facts.calendar;
    if (state.closedBefore === null) throw wf("the closing of the case has no proven time yet", "zakończenie sprawy nie ma jeszcze dowiedzionego czasu");
    const allowed = calendar.destructionAllowedFrom(category, state.closedBefore);
    const after = facts.proven.after;
    if (after === null || after < allowed) {
      const when = calendar.formatTime(allowed);
      const proven = after === null ? { en: "no proven time", pl: "brak dowiedzionego czasu" } : { en: "proven after " + calendar.formatTime(after), pl: "dowiedzione po " + calendar.formatTime(after) };
      throw wf(
        "category " + category.text + ": the retention period, counted from the proven closing, runs until " + when + "; destruction (brakowanie) is refused before (this step: " + proven.en + ")",
        "kategoria " + category.text + ": okres przechowywania, liczony od dowiedzionego zakończenia sprawy, trwa do " + when + "; brakowanie wcześniej jest niedozwolone (ten krok: " + proven.pl + ")"
      );
    }
    return { ...state, destroyed: true };
  }

  function ruleTransferred(state, event, facts) {
    only(event.record.data, "archive");
    dReq(event.record.data, "archive");
    needDocument(event);
    const category = state.category;
    if (category === null || category.years !== null) {
      throw wf("only category A records (materiały archiwalne) go to the state archive", "do archiwum państwowego przekazuje się tylko materiały archiwalne kategorii A");
    }
    if (!state.archived) throw wf("the state archive takes a case from the office archive only", "archiwum państwowe przejmuje sprawę tylko z archiwum zakładowego");
    if (state.closedBefore === null) throw wf("the closing of the case has no proven time yet", "zakończenie sprawy nie ma jeszcze dowiedzionego czasu");
    const calendar = facts.calendar;
    const period = { text: "B" + ARCHIVE_TRANSFER_YEARS, years: ARCHIVE_TRANSFER_YEARS, review: false };
    const allowed = calendar.destructionAllowedFrom(period, state.closedBefore);
    const after = facts.proven.after;
    if (after === null || after < allowed) {
      const when = calendar.formatTime(allowed);
      const proven = after === null ? { en: "no proven time", pl: "brak dowiedzionego czasu" } : { en: "proven after " + calendar.formatTime(after), pl: "dowiedzione po " + calendar.formatTime(after) };
      throw wf(
        "category A: the office-archive period of " + ARCHIVE_TRANSFER_YEARS + " years, counted from the proven closing, runs until " + when + "; the transfer to the state archive is refused before (this step: " + proven.en + ")",
        "kategoria A: okres przechowywania w archiwum zakładowym (" + ARCHIVE_TRANSFER_YEARS + " lat), liczony od dowiedzionego zakończenia sprawy, trwa do " + when + "; przekazanie do archiwum państwowego wcześniej jest niedozwolone (ten krok: " + proven.pl + ")"
      );
    }
    return { ...state, transferred: true };
  }

  const RULES = {
    registered: ruleRegistered,
    assigned: ruleAssigned,
    "case-opened": ruleCaseOpened,
    attached: ruleAttached,
    submitted: ruleSubmitted,
    accepted: ruleAccepted,
    rejected: ruleRejected,
    signed: ruleSigned,
    "substantive-check": ruleCostStep,
    "formal-check": ruleCostStep,
    "account-coding": ruleCostStep,
    countersigned: ruleCostStep,
    "approved-for-payment": ruleCostStep,
    dispatched: ruleDispatched,
    "receipt-recorded": ruleReceipt,
    delivered: ruleDelivered,
    closed: ruleClosed,
    reopened: ruleReopened,
    archived: ruleArchived,
    destroyed: ruleDestroyed,
    transferred: ruleTransferred,
  };

  /** rules.apply, check for check. */
  function apply(state, event, facts) {
    const r = event.record;
    const cert = facts.cert;
    if (state.destroyed) throw wf("the case was destroyed (brakowanie); nothing may follow", "sprawę wybrakowano (brakowanie); nic nie może nastąpić później");
    if (state.transferred) throw wf("the case was transferred to the state archive (archiwum państwowe); nothing may follow", "sprawę przekazano do archiwum państwowego; nic nie może nastąpić później");
    if (r.seq !== state.seq) throw wf("event number " + r.seq + " where " + state.seq + " was expected", "zdarzenie numer " + r.seq + ", a oczekiwano numeru " + state.seq);
    if (r.prev === null ? state.head !== null : state.head === null || !equalBytes(r.prev, state.head)) {
      throw wf("the previous-event hash does not match the chain", "skrót poprzedniego zdarzenia nie zgadza się z łańcuchem");
    }
    if (r.office !== cert.office || r.position !== cert.position) {
      throw wf("the event's office or position differs from its certificate", "urząd albo stanowisko zdarzenia różni się od certyfikatu");
    }
    if (cert.issued > r.time) throw wf("position " + pyRepr(cert.position) + " was certified after the event", "stanowisko " + pyRepr(cert.position) + " otrzymało certyfikat po tym zdarzeniu");
    if (!PATH_STEPS.includes(r.type)) {
      let role = EVENT_TYPES[r.type][2];
      if (r.type === "destroyed" && isBc(state)) role = "officer";
      if (!cert.roles.includes(role)) throw roleError(cert, r.type, role);
    }
    if (r.time < state.lastTime) throw wf("the event is dated before the previous event", "zdarzenie jest datowane przed poprzednim zdarzeniem");
    if (r.type === "case-opened") {
      if (state.case !== null) throw wf("the case " + state.case + " is already open", "sprawa " + state.case + " jest już założona");
    } else if (r.case !== state.case) {
      const expected = state.case !== null ? { en: state.case, pl: state.case } : { en: "none (the case is not open yet)", pl: "brak (sprawa nie jest jeszcze założona)" };
      throw wf("the event names case " + pyReprValue(r.case) + "; expected " + expected.en, "zdarzenie podaje sprawę " + pyReprValue(r.case) + "; oczekiwano: " + expected.pl);
    }
    const t = T(r.type);
    if (state.archived && r.type !== "destroyed" && r.type !== "transferred") throw wf("the case is archived; " + t.en + " is no longer possible", "sprawa jest w archiwum; " + t.pl + " nie jest już możliwe");
    if (state.closed && !LATE_OK.includes(r.type)) throw wf("the case is closed; " + t.en + " is no longer possible", "sprawa jest zakończona; " + t.pl + " nie jest już możliwe");
    if (r.seq === 0n && r.type !== "registered" && r.type !== "case-opened") {
      throw wf("a chain starts with a registration or the opening of a case", "łańcuch zaczyna się od rejestracji przesyłki albo założenia sprawy");
    }
    if (state.case !== null && OFFICER_STEPS.includes(r.type) && r.position !== state.officer) {
      throw wf(
        "the case officer (prowadzący sprawę) is " + pyReprValue(state.officer) + "; " + pyRepr(r.position) + " may not record " + t.en,
        "prowadzącym sprawę jest " + pyReprValue(state.officer) + "; " + pyRepr(r.position) + " nie może zapisać zdarzenia " + t.pl
      );
    }
    let next;
    try {
      next = RULES[r.type](state, event, facts);
    } catch (exc) {
      // rules.apply turns a MalformedError of a parser into a WorkflowError with its message.
      if (exc instanceof LedgerError && exc.kind === "malformed") throw wf(render(exc, "en"), render(exc, "pl"));
      throw exc;
    }
    return { ...next, seq: state.seq + 1n, head: event.hash, lastTime: r.time };
  }

  // ------------------------------------------------------------------------------- trail.py

  function field(obj, key, kind, what) {
    const value = obj.get(key);
    const ok = kind === "dict" ? isDict(value) : kind === "list" ? Array.isArray(value) : isStr(value);
    if (!ok) throw malformed("field_type", { what: term(what), key: pyRepr(key) });
    return value;
  }

  async function trailReceipt(text, policy, digest, what) {
    if (!isStr(text)) throw malformed("receipt_not_text", { what: what });
    try {
      return await verifyReceipt(utf8(text), policy, digest);
    } catch (exc) {
      if (exc instanceof LedgerError && exc.kind !== "page") throw failed("receipt_fails", { what: what, inner: exc });
      throw exc;
    }
  }

  /**
   * ledger.eod.trail.verify_trail. ``options``: policy (a parsed pinned policy, or null for the
   * bundle's), officeKey (the pinned "SHA256:..." fingerprint or base64 key, or null), document
   * (a 32-byte digest that must be a document of the case, or null).
   */
  async function verifyTrail(bytes, options) {
    const opts = options || {};
    const what = "trail bundle";
    if (bytes.length > MAX_BUNDLE_SIZE) throw malformed("json_too_large", { what: term(what), limit: String(MAX_BUNDLE_SIZE) });
    const bundle = loadsStrict(bytes, what);
    if (bundle.get("format") !== TRAIL_FORMAT) throw malformed("json_format", { what: term(what), format: TRAIL_FORMAT });
    // _trust
    const office = await parseOfficeRecord(field(bundle, "office", "dict", what));
    const caFingerprint = await keyFingerprint(office.caKey);
    const pin = opts.officeKey === null || opts.officeKey === undefined ? null : opts.officeKey.trim();
    if (pin !== null && pin !== caFingerprint && pin !== b64encode(office.caKey)) {
      throw failed("ca_key_not_pinned", { what: term(what), fingerprint: caFingerprint });
    }
    const bundledPolicyText = field(bundle, "policy", "str", what);
    const bundledPolicy = await parsePolicy(bundledPolicyText);
    const policy = opts.policy ? opts.policy : bundledPolicy;
    const calendar = office.calendar;
    const kase = field(bundle, "case", "str", what);
    // _certificates
    const certs = new Map();
    for (const item of field(bundle, "certificates", "list", what)) {
      if (!isDict(item)) throw malformed("cert_not_object");
      const cert = parseCertificate(item);
      await verifyCertificate(cert, office.caKey);
      if (cert.office !== office.office) throw failed("cert_other_office", { position: pyRepr(cert.position), office: pyRepr(cert.office) });
      if (certs.has(cert.position)) throw malformed("cert_twice", { position: pyRepr(cert.position) });
      certs.set(cert.position, cert);
    }
    // _checkpoints
    const checkpoints = new Map();
    const rawCheckpoints = field(bundle, "checkpoints", "list", what);
    for (let index = 0; index < rawCheckpoints.length; index++) {
      const item = rawCheckpoints[index];
      if (!isStr(item)) throw malformed("checkpoint_text", { index: String(index) });
      let checkpoint;
      try {
        checkpoint = await verifyCheckpoint(item, policy);
      } catch (exc) {
        if (exc instanceof LedgerError && exc.kind !== "page") throw failed("checkpoint_fails", { index: String(index), inner: exc });
        throw exc;
      }
      checkpoints.set(checkpoint.size.toString() + ":" + toHex(checkpoint.root), checkpoint.time);
    }
    // the events
    const rawEvents = field(bundle, "events", "list", what);
    if (!rawEvents.length) throw failed("trail_empty");
    let state = newCaseState();
    const entries = [];
    for (let index = 0; index < rawEvents.length; index++) {
      const entry = rawEvents[index];
      if (!sameKeys(entry, ["event", "receipt"])) throw malformed("entry_shape", { index: String(index) });
      if (!isDict(entry.get("event"))) throw malformed("entry_event", { index: String(index) });
      const event = await parseSignedEvent(entry.get("event"));
      const r = event.record;
      const label = { en: "event #" + index + " (" + r.type + ")", pl: "zdarzenie #" + index + " (" + r.type + ")" };
      const cert = certs.get(r.position);
      if (cert === undefined) throw failed("event_no_cert", { what: label, position: pyRepr(r.position) });
      try {
        await verifyEd25519(cert.publicKey, event.signingBytes, event.signature);
      } catch (exc) {
        if (exc instanceof LedgerError && exc.kind === "verification") throw failed("event_bad_signature", { what: label, position: pyRepr(r.position) });
        throw exc;
      }
      const receipt = await trailReceipt(entry.get("receipt"), policy, event.hash, label);
      let after = null;
      if (r.seen !== null) {
        const found = checkpoints.get(r.seen.size.toString() + ":" + toHex(r.seen.root));
        if (found === undefined) throw failed("seen_missing", { what: label, size: r.seen.size.toString() });
        if (receipt.index < r.seen.size) throw failed("seen_after_leaf", { what: label });
        after = found;
      }
      const proven = { after: after, before: receipt.timeBound };
      if (r.time > receipt.timeBound + MAX_CLOCK_SKEW) {
        throw failed("event_after_bound", { what: label, time: calendar.formatTime(r.time), bound: calendar.formatTime(receipt.timeBound) });
      }
      if (after !== null && r.time < after - MAX_CLOCK_SKEW) {
        throw failed("event_before_seen", { what: label, time: calendar.formatTime(r.time), after: calendar.formatTime(after) });
      }
      const flagged =
        r.declared !== null && ((after !== null && r.declared < after - MAX_CLOCK_SKEW) || r.declared > receipt.timeBound + MAX_CLOCK_SKEW);
      try {
        state = apply(state, event, { cert: cert, calendar: calendar, positions: certs, proven: proven });
      } catch (exc) {
        if (exc instanceof LedgerError && exc.kind === "verification") throw failed("workflow", { what: label, inner: exc });
        throw exc;
      }
      entries.push({ event: event, certificate: cert, receipt: receipt, proven: proven, flagged: flagged });
    }
    if (state.case !== null && state.case !== kase) throw failed("case_mismatch", { case: pyRepr(kase), actual: pyRepr(state.case) });
    const documents = new Map();
    for (const item of field(bundle, "documents", "list", what)) {
      if (!isDict(item)) throw malformed("document_entry");
      const digest = parseHexDigest(item.get("digest"), "document digest");
      const short = toHex(digest).slice(0, 16);
      documents.set(toHex(digest), await trailReceipt(item.get("receipt"), policy, digest, { en: "document " + short, pl: "dokument " + short }));
    }
    // _check_head
    const rawHead = bundle.get("head");
    if (!sameKeys(rawHead, ["head", "signature", "receipt"])) throw failed("head_missing");
    const head = await parseHead(new Map([["head", rawHead.get("head")], ["signature", rawHead.get("signature")]]));
    try {
      await verifyEd25519(office.caKey, head.signingBytes, head.signature);
    } catch (exc) {
      if (exc instanceof LedgerError && exc.kind === "verification") throw failed("head_not_signed");
      throw exc;
    }
    if (head.office !== office.office) throw failed("head_office", { office: pyRepr(head.office) });
    const headReceipt = await trailReceipt(rawHead.get("receipt"), policy, head.hash, { en: "the trail head", pl: "nagłówek ścieżki" });
    if (head.count !== BigInt(entries.length)) throw failed("head_count", { n: String(entries.length), count: head.count.toString() });
    if (!equalBytes(head.chain, entries[0].event.hash) || !equalBytes(head.last, entries[entries.length - 1].event.hash)) throw failed("head_events");
    const doc = opts.document || null;
    const used = [];
    if (doc !== null) {
      entries.forEach((e, i) => {
        if (e.event.record.document !== null && equalBytes(e.event.record.document, doc)) used.push(i);
      });
      if (!used.length) throw failed("document_not_in_case", { digest: toHex(doc) });
    }
    return {
      office: office,
      caFingerprint: caFingerprint,
      caPinned: pin !== null,
      policyPinned: Boolean(opts.policy),
      policyText: bundledPolicyText,
      case: kase,
      entries: entries,
      state: state,
      head: head,
      headReceipt: headReceipt,
      document: doc,
      documentEvents: used,
      documentReceipt: doc !== null ? documents.get(toHex(doc)) || null : null,
    };
  }

  // ------------------------------------------------------------------- the timeline, in words

  function dateText(value) {
    try {
      return isStr(value) ? parseDate(value, "date") : null;
    } catch (exc) {
      if (exc instanceof LedgerError) return null;
      throw exc;
    }
  }

  /** trail.describe, in English (word for word) and in Polish. */
  function describeEvent(event, calendar) {
    const r = event.record;
    const d = (key) => (r.data.has(key) ? r.data.get(key) : null);
    const s = (key) => pyStr(d(key));
    let en = "";
    let pl = "";
    switch (r.type) {
      case "registered":
        en = "item " + s("register") + ", " + s("direction") + " via " + s("channel") + ", " + s("kind") + ", " + s("attachments") + " attachment(s)";
        pl = "przesyłka " + s("register") + ", " + s("direction") + ", kanał " + s("channel") + ", " + s("kind") + ", załączniki: " + s("attachments");
        if (pyTruthy(d("sender_ref"))) {
          en += ", sender's reference " + s("sender_ref");
          pl += ", znak nadawcy " + s("sender_ref");
        }
        break;
      case "assigned":
        en = "to " + s("to");
        pl = "dla " + s("to");
        if (pyTruthy(d("method"))) {
          en += ", method: " + s("method");
          pl += ", sposób załatwienia: " + s("method");
        }
        if (pyTruthy(d("deadline"))) {
          en += ", deadline " + s("deadline");
          pl += ", termin " + s("deadline");
        }
        break;
      case "case-opened": {
        const jrwa = d("jrwa");
        const title = isDict(jrwa) && jrwa.has("title") ? pyStr(jrwa.get("title")) : "None";
        en = "case " + pyStr(r.case) + ", JRWA " + title + ", category " + s("category");
        pl = "sprawa " + pyStr(r.case) + ", JRWA " + title + ", kategoria archiwalna " + s("category");
        if (pyTruthy(d("category_reason"))) {
          const listed = isDict(jrwa) && jrwa.has("category") ? pyStr(jrwa.get("category")) : "None";
          en += " (the class has " + listed + ": " + s("category_reason") + ")";
          pl += " (kategoria klasy: " + listed + "; powód: " + s("category_reason") + ")";
        }
        en += ", " + s("kind");
        pl += ", " + s("kind");
        const steps = d("path");
        if (Array.isArray(steps) && steps.length) {
          const names = steps.map((step) => {
            const name = isDict(step) && step.has("event") ? step.get("event") : null;
            return isStr(name) && has(EVENT_TYPES, name) ? EVENT_TYPES[name][1] : pyStr(name);
          });
          en += ": " + names.join(" → ");
          pl += ": " + names.join(" → ");
        }
        break;
      }
      case "attached":
      case "receipt-recorded":
        en = pl = s("kind");
        break;
      case "submitted":
        en = "draft for acceptance";
        pl = "projekt do akceptacji";
        break;
      case "accepted":
        en = "level " + s("level");
        pl = "poziom " + s("level");
        break;
      case "rejected":
      case "reopened":
        en = "reason: " + s("reason");
        pl = "powód: " + s("reason");
        break;
      case "signed":
        en = "accepted draft " + s("draft").slice(0, 16);
        pl = "zaakceptowany projekt " + s("draft").slice(0, 16);
        break;
      case "account-coding":
        en = "accounts " + s("accounts");
        pl = "konta " + s("accounts");
        break;
      case "dispatched":
        en = s("register") + " via " + s("channel");
        pl = s("register") + ", kanał " + s("channel");
        break;
      case "delivered": {
        const notice = dateText(d("notice"));
        let day;
        if (d("deemed") === true && notice !== null) {
          day = deemedDelivery(notice);
          en = "deemed delivered on " + day.iso() + " (first notice " + notice.iso() + ")";
          pl = "doręczenie zastępcze " + day.iso() + " (pierwsze awizo " + notice.iso() + ")";
        } else {
          const given = dateText(d("date"));
          day = given !== null ? given : calendar.dateOf(r.time);
          en = "delivered on " + day.iso();
          pl = "doręczono " + day.iso();
        }
        const appeal = appealDeadline(day).iso();
        en += "; the 14-day appeal period ends " + appeal;
        pl += "; 14-dniowy termin na odwołanie upływa " + appeal;
        break;
      }
      case "destroyed":
        en = "consent " + s("consent");
        pl = "zgoda " + s("consent");
        break;
      case "transferred":
        en = "to " + s("archive") + ", handover list";
        pl = "do " + s("archive") + ", spis zdawczo-odbiorczy";
        break;
      default:
        en = pl = pyTruthy(d("note")) ? s("note") : "";
    }
    if (r.document !== null) {
      const short = toHex(r.document).slice(0, 16);
      en = en ? en + "; document " + short : "document " + short;
      pl = pl ? pl + "; dokument " + short : "dokument " + short;
    }
    return { en: en || "-", pl: pl || "-" };
  }

  /** trail.end_state */
  function endState(state) {
    if (state.destroyed) return { en: "destroyed (brakowanie)", pl: "wybrakowana (brakowanie)" };
    if (state.transferred) return { en: "transferred to the state archive (archiwum państwowe)", pl: "przekazana do archiwum państwowego" };
    if (state.archived) return { en: "in the office archive (archiwum zakładowe)", pl: "w archiwum zakładowym" };
    if (state.closed) return { en: "closed (zakończona)", pl: "zakończona" };
    if (state.case !== null) return { en: "open (w toku)", pl: "w toku" };
    return { en: "registered, no case opened yet", pl: "zarejestrowana, sprawy jeszcze nie założono" };
  }

  /** trail.proven_line */
  function provenLine(entry, calendar) {
    const fmt = (t) => calendar.formatTime(t);
    const after = entry.proven.after;
    const leaf = " (leaf " + entry.receipt.index + " of " + entry.receipt.size + ")";
    const leafPl = " (liść " + entry.receipt.index + " z " + entry.receipt.size + ")";
    return {
      en: (after === null ? "no checkpoint before it" : "after " + fmt(after)) + ", no later than " + fmt(entry.receipt.timeBound) + leaf,
      pl: (after === null ? "bez wcześniejszego punktu kontrolnego" : "po " + fmt(after)) + ", nie później niż " + fmt(entry.receipt.timeBound) + leafPl,
    };
  }

  /** trail.event_lines: the timeline's lines of one event, in English word for word. */
  function eventLines(entry, calendar) {
    const r = entry.event.record;
    const [en, pl] = EVENT_TYPES[r.type];
    const c = entry.certificate;
    const lines = [
      "#" + String(r.seq).padEnd(3) + " " + calendar.formatTime(r.time) + "  " + en + " (" + pl + ")",
      "     who:    " + c.position + ", " + c.title + " (unit " + c.unit + ")",
      "     what:   " + describeEvent(entry.event, calendar).en,
      "     proven: " + provenLine(entry, calendar).en,
    ];
    if (r.declared !== null) lines.push("     declared: " + calendar.formatTime(r.declared) + (entry.flagged ? " (outside the proven interval: flagged)" : ""));
    return lines;
  }

  /** The verdict on a trail bundle as plain data, comparable with ledger.eod.trail's. */
  async function checkTrail(bundleBytes, options) {
    const opts = options || {};
    try {
      const policy = opts.policy ? await parsePolicy(opts.policy) : null;
      const trail = await verifyTrail(bundleBytes, {
        policy: policy,
        officeKey: opts.officeKey || null,
        document: opts.document ? fromHex(opts.document) : null,
      });
      return {
        valid: true,
        case: trail.case,
        office: trail.office.office,
        ca_fingerprint: trail.caFingerprint,
        events: trail.entries.map((e) => ({
          seq: e.event.record.seq.toString(),
          type: e.event.record.type,
          hash: toHex(e.event.hash),
          lines: eventLines(e, trail.office.calendar),
          flagged: e.flagged,
        })),
        state: endState(trail.state).en,
        document_events: trail.documentEvents,
        complete_as_of: trail.office.calendar.formatTime(trail.headReceipt.timeBound),
      };
    } catch (exc) {
      if (exc instanceof LedgerError) return { valid: false, kind: exc.kind, reason: exc.message };
      return { valid: false, kind: "internal", reason: String(exc) + (exc && exc.stack ? " " + exc.stack : "") };
    }
  }

  /** Whether a chosen file is a trail bundle (JSON) rather than a receipt (tlog-proof text). */
  function looksLikeTrail(head) {
    let k = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0;
    while (k < head.length && (head[k] === 0x20 || head[k] === 0x09 || head[k] === 0x0a || head[k] === 0x0d)) k++;
    return head[k] === 0x7b; // "{"
  }

  // ======================================================================== the page (UI)

  const UI = {
    title: { pl: "Weryfikacja dokumentu w rejestrze", en: "Document verification" },
    intro: {
      pl:
        "Wybierz dokument, jego pokwitowanie (.tlog-proof) i politykę zaufania rejestru, albo " +
        "wiązkę ścieżki audytu sprawy (ledger eod trail) i, opcjonalnie, dokument sprawy. " +
        "Wszystko jest sprawdzane w tej przeglądarce: dokument ani jego skrót nie są nigdzie wysyłane.",
      en:
        "Choose a document, its receipt (.tlog-proof) and the ledger's trust policy, or a " +
        "case's audit-trail bundle (ledger eod trail) and, optionally, a document of the case. " +
        "Everything is checked in this browser: neither the document nor its hash is sent anywhere.",
    },
    document_label: { pl: "Dokument", en: "Document" },
    document_hint: {
      pl: "Dowolny plik; przeglądarka liczy jego skrót SHA-256 lokalnie. Przy ścieżce audytu opcjonalny.",
      en: "Any file; the browser computes its SHA-256 locally. Optional with an audit trail.",
    },
    receipt_label: {
      pl: "Pokwitowanie (.tlog-proof) albo wiązka ścieżki audytu (.json)",
      en: "Receipt (.tlog-proof) or audit-trail bundle (.json)",
    },
    receipt_hint: {
      pl: "Wiązkę ścieżki audytu (ledger-eod-trail/v2) strona rozpoznaje sama.",
      en: "The page recognises an audit-trail bundle (ledger-eod-trail/v2) by itself.",
    },
    office_key_label: {
      pl: "Odcisk klucza CA urzędu (tylko ścieżka audytu, opcjonalnie)",
      en: "Office CA key fingerprint (audit trail only, optional)",
    },
    office_key_hint: {
      pl:
        "Jak --office-key w ledger eod verify-trail: odcisk SHA256:… (albo klucz base64) opublikowany " +
        "przez urząd. Bez niego strona pokaże odcisk klucza z wiązki do porównania.",
      en:
        "As --office-key of ledger eod verify-trail: the SHA256:… fingerprint (or base64 key) the " +
        "office publishes. Without it the page shows the bundle's key fingerprint to compare.",
    },
    policy_label: { pl: "Polityka zaufania (tlog-policy)", en: "Trust policy (tlog-policy)" },
    policy_file_label: { pl: "…albo wczytaj z pliku:", en: "…or load it from a file:" },
    policy_hint: {
      pl:
        "Audytor powinien porównać odcisk polityki z polityką opublikowaną przez instytucje " +
        "prowadzące rejestr, a nie ufać jej tylko dlatego, że podał ją węzeł.",
      en:
        "An auditor should compare the policy's fingerprint with the policy published by the " +
        "institutions running the ledger, not trust it because a node served it.",
    },
    verify: { pl: "Sprawdź", en: "Verify" },
    lang_label: { pl: "Język", en: "Language" },
    offline_note: {
      pl: "Strona nie wysyła żadnych plików. Działa także otwarta z dysku, bez sieci.",
      en: "This page sends no files. It also works opened from disk, without a network.",
    },
    status_busy: { pl: "Sprawdzanie…", en: "Checking…" },
    status_valid: { pl: "WAŻNE: dokument jest w rejestrze", en: "VALID: the document is in the ledger" },
    status_invalid: { pl: "NIEWAŻNE", en: "INVALID" },
    status_valid_trail: {
      pl: "WAŻNE: ścieżka audytu sprawy jest spójna",
      en: "VALID: the case's audit trail checks out",
    },
    trail_case: { pl: "Sprawa (znak sprawy)", en: "Case (case sign)" },
    trail_office: { pl: "Urząd", en: "Office" },
    trail_ca: { pl: "Klucz CA urzędu (odcisk)", en: "Office CA key (fingerprint)" },
    trail_ca_pinned: { pl: " (zgodny z podanym odciskiem)", en: " (matches the pinned key)" },
    trail_ca_unpinned: {
      pl: " (z wiązki: porównaj z kluczem opublikowanym przez urząd)",
      en: " (from the bundle: compare it with the office's published key)",
    },
    trail_policy: { pl: "Polityka zaufania rejestru", en: "Ledger trust policy" },
    trail_policy_pinned: { pl: "z pola powyżej (przypięta), odcisk ", en: "from the field above (pinned), fingerprint " },
    trail_policy_bundle: {
      pl: "z wiązki (nieprzypięta: wklej opublikowaną politykę, aby ją przypiąć), odcisk ",
      en: "from the bundle (not pinned: paste the published policy to pin it), fingerprint ",
    },
    trail_state: { pl: "Stan końcowy", en: "Final state" },
    trail_document: { pl: "Dokument", en: "Document" },
    trail_document_in: { pl: "w zdarzeniach ", en: "in events " },
    trail_document_bound: { pl: "; istniał nie później niż ", en: "; existed no later than " },
    trail_checked: {
      pl:
        "Sprawdzono: {n} zdarzeń; każdy certyfikat stanowiska (kluczem CA urzędu), każdy podpis " +
        "zdarzenia, każde pokwitowanie i punkt kontrolny z rejestru (kworum kontrasygnat, ścieżka " +
        "Merkle), łańcuch skrótów poprzednich zdarzeń, czas każdego zdarzenia względem rejestru, " +
        "podpisany nagłówek ścieżki oraz pokwitowania dokumentów.",
      en:
        "Checked: {n} events; every position certificate (under the office CA key), every event " +
        "signature, every ledger receipt and checkpoint (cosignature quorum, Merkle path), the " +
        "chain of previous-event hashes, each event's time against the ledger, the signed head " +
        "of the trail, and the document receipts.",
    },
    trail_rules: {
      pl:
        "Reguły obiegu sprawdzono w całości, tymi samymi regułami co ledger eod verify-trail: " +
        "dekretacja i terminy, prowadzący sprawę, ścieżka akceptacji z rolami i komórkami, ścieżka " +
        "dokumentu kosztowego, wysyłka i doręczenie, wznowienie, archiwum i brakowanie po okresie " +
        "przechowywania liczonym od dowiedzionego czasu zakończenia, w strefie czasowej urzędu.",
      en:
        "The workflow rules were checked in full, by the same rules as ledger eod verify-trail: " +
        "dekretacja and deadlines, the case officer, the acceptance path with its roles and " +
        "units, the cost-document path, dispatch and delivery, reopening, the archive and " +
        "destruction after the retention period counted from the proven closing, in the " +
        "office's time zone.",
    },
    trail_name_unverified: {
      pl: " (nazwa niezweryfikowana: podaj odcisk klucza CA urzędu)",
      en: " (name not verified: pin the office key)",
    },
    trail_zone: { pl: "Strefa czasowa urzędu", en: "Office time zone" },
    trail_complete: { pl: "Kompletna na dzień", en: "Complete as of" },
    trail_complete_text: {
      pl: "{time}: podpisany nagłówek liczy {n} zdarzeń",
      en: "{time}: the signed head counts {n} events",
    },
    trail_flagged: {
      pl: "Oznaczone: zadeklarowany czas poza dowiedzionym przedziałem w zdarzeniach ",
      en: "Flagged: a declared time outside the proven interval in events ",
    },
    tl_proven: { pl: "dowód", en: "proven" },
    tl_declared: { pl: "deklaracja", en: "declared" },
    tl_flag: { pl: " (poza dowiedzionym przedziałem: oznaczone)", en: " (outside the proven interval: flagged)" },
    timeline_title: { pl: "Przebieg sprawy", en: "Course of the case" },
    tl_who: { pl: "kto", en: "who" },
    tl_what: { pl: "co", en: "what" },
    tl_ledger: { pl: "rejestr", en: "ledger" },
    tl_unit: { pl: "komórka", en: "unit" },
    tl_bound: { pl: "istniało nie później niż ", en: "existed no later than " },
    tl_leaf: { pl: "liść {i} z {n}", en: "leaf {i} of {n}" },
    status_error: { pl: "Nie można sprawdzić", en: "Cannot verify" },
    kind_malformed: { pl: "Uszkodzone lub niepoprawne dane: ", en: "Malformed input: " },
    kind_policy: { pl: "Polityka zaufania: ", en: "Trust policy: " },
    field_digest: { pl: "Skrót SHA-256 dokumentu", en: "Document SHA-256" },
    field_index: { pl: "Indeks liścia", en: "Leaf index" },
    field_size: { pl: "Rozmiar drzewa", en: "Tree size" },
    field_origin: { pl: "Rejestr (origin)", en: "Origin" },
    field_cosigners: { pl: "Kontrasygnaty walidatorów", en: "Validator cosignatures" },
    field_time: {
      pl: "Dokument istniał nie później niż (UTC)",
      en: "The document existed no later than (UTC)",
    },
    field_policy: { pl: "Odcisk polityki (SHA-256)", en: "Policy fingerprint (SHA-256)" },
    policy_from_node: { pl: "Polityka pobrana z tego węzła (/v1/policy).", en: "Policy fetched from this node (/v1/policy)." },
    policy_from_file: { pl: "Polityka wczytana z pliku: ", en: "Policy loaded from the file: " },
    policy_fetch_failed: {
      pl: "Nie udało się pobrać polityki z węzła; wczytaj ją z pliku.",
      en: "Could not fetch the policy from the node; load it from a file.",
    },
    policy_offline: {
      pl: "Strona otwarta z dysku: wczytaj politykę z pliku albo ją wklej.",
      en: "Page opened from disk: load the policy from a file or paste it.",
    },
  };

  const state = {
    lang: "pl",
    run: 0,
    outcome: null, // {state, result?, error?, errorContext?, digestHex?, policyHex?}
    policySource: null, // {kind: "node"|"file"|"fetch_failed"|"offline", name?}
  };

  const $ = (id) => document.getElementById(id);

  function ui(key) {
    const entry = UI[key];
    return entry ? entry[state.lang] || entry.en : key;
  }

  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }

  function applyLanguage() {
    document.documentElement.lang = state.lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = ui(el.dataset.i18n);
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
    }
    renderPolicySource();
    renderOutcome();
  }

  function renderPolicySource() {
    const source = state.policySource;
    let text = "";
    if (source) {
      if (source.kind === "node") text = ui("policy_from_node");
      else if (source.kind === "file") text = ui("policy_from_file") + source.name;
      else if (source.kind === "fetch_failed") text = ui("policy_fetch_failed");
      else if (source.kind === "offline") text = ui("policy_offline");
    }
    setText("policy-source", text);
  }

  function showField(id, value) {
    const row = $(id + "-row");
    if (value === null || value === undefined) {
      row.hidden = true;
      setText(id, "");
    } else {
      row.hidden = false;
      setText(id, value);
    }
  }

  function renderOutcome() {
    const panel = $("result");
    const outcome = state.outcome;
    panel.dataset.run = String(state.run);
    if (outcome === null) {
      panel.hidden = true;
      panel.dataset.state = "idle";
      return;
    }
    panel.hidden = false;
    panel.dataset.state = outcome.state;
    panel.dataset.kind = outcome.error ? outcome.error.kind : "";
    panel.dataset.code = outcome.error ? outcome.error.code : "";
    setText("result-title", ui("status_" + outcome.state));
    let reason = "";
    if (outcome.error) {
      if (outcome.errorContext === "policy") reason = ui("kind_policy");
      else if (outcome.error.kind === "malformed") reason = ui("kind_malformed");
      reason += render(outcome.error, state.lang);
    }
    setText("reason", reason);
    $("reason").hidden = !reason;
    const r = outcome.result;
    showField("digest", outcome.digestHex || null);
    showField("index", r ? r.index.toString() : null);
    showField("size", r ? r.size.toString() : null);
    showField("origin", r ? r.origin : null);
    showField("cosigners", r ? r.cosigners.length + " (" + r.cosigners.join(", ") + ")" : null);
    showField("time-bound", r ? formatTime(r.timeBound, state.lang) : null);
    showField("policy-fingerprint", outcome.trail ? null : outcome.policyHex || null);
    renderTrail(outcome);
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function eventLine(label, text) {
    const line = element("div", "event-line");
    line.append(element("span", "", ui(label)), element("span", "", text));
    return line;
  }

  /** The audit trail: summary, what was checked, and the timeline (who, what, when, proven). */
  function renderTrail(outcome) {
    const box = $("trail");
    const list = $("timeline");
    const t = outcome.trail;
    list.replaceChildren();
    box.hidden = !t;
    if (!t) return;
    const lang = state.lang;
    const pick = (v) => v[lang] || v.en;
    const calendar = t.office.calendar;
    const fmt = (ts) => calendar.formatTime(ts);
    if (outcome.state === "valid") setText("result-title", ui("status_valid_trail"));
    showField("trail-case", t.case);
    showField("trail-office", t.office.office + " (" + t.office.name + ")" + (t.caPinned ? "" : ui("trail_name_unverified")));
    showField("trail-ca", t.caFingerprint + ui(t.caPinned ? "trail_ca_pinned" : "trail_ca_unpinned"));
    showField("trail-policy", ui(t.policyPinned ? "trail_policy_pinned" : "trail_policy_bundle") + (outcome.policyHex || ""));
    showField("trail-origin", t.entries[0].receipt.origin);
    showField("trail-zone", t.office.zone);
    showField("trail-state", pick(endState(t.state)));
    showField(
      "trail-complete",
      ui("trail_complete_text").replace("{time}", fmt(t.headReceipt.timeBound)).replace("{n}", t.head.count.toString())
    );
    let doc = null;
    if (t.document !== null) {
      doc = toHex(t.document) + ": " + ui("trail_document_in") + t.documentEvents.map((i) => "#" + i).join(", ");
      if (t.documentReceipt) doc += ui("trail_document_bound") + fmt(t.documentReceipt.timeBound);
    }
    showField("trail-document", doc);
    const flagged = t.entries.map((e, i) => (e.flagged ? i : null)).filter((i) => i !== null);
    showField("trail-flagged", flagged.length ? ui("trail_flagged") + flagged.map((i) => "#" + i).join(", ") : null);
    setText("trail-checked", ui("trail_checked").replace("{n}", String(t.entries.length)));
    setText("trail-rules", ui("trail_rules"));
    t.entries.forEach((entry, i) => {
      const r = entry.event.record;
      const c = entry.certificate;
      const [en, pl] = EVENT_TYPES[r.type];
      const classes = [t.documentEvents.includes(i) ? "has-document" : "", entry.flagged ? "flagged" : ""].filter(Boolean).join(" ");
      const li = element("li", classes);
      li.dataset.seq = r.seq.toString();
      li.dataset.type = r.type;
      li.append(
        element("div", "event-head", "#" + String(r.seq).padEnd(3) + " " + fmt(r.time) + "  " + (lang === "pl" ? pl + " (" + en + ")" : en + " (" + pl + ")")),
        eventLine("tl_who", c.position + ", " + c.title + " (" + ui("tl_unit") + " " + c.unit + ")"),
        eventLine("tl_what", pick(describeEvent(entry.event, calendar))),
        eventLine("tl_proven", pick(provenLine(entry, calendar)))
      );
      if (r.declared !== null) li.append(eventLine("tl_declared", fmt(r.declared) + (entry.flagged ? ui("tl_flag") : "")));
      list.append(li);
    });
  }

  /**
   * An audit-trail bundle, as ledger eod verify-trail checks it: the policy in the field (if
   * any) is pinned like --policy, else the bundle's is used; the office key field is
   * --office-key; the document, if chosen, is --document (hashed here, never sent).
   */
  async function runTrailVerification(outcome, bundleFile, documentFile) {
    subtle();
    const policyText = $("policy-text").value;
    let policy = null;
    if (policyText.trim()) {
      const policyBytes = utf8(policyText);
      outcome.policyHex = toHex(await sha256(policyBytes));
      try {
        policy = await parsePolicy(policyBytes);
      } catch (exc) {
        outcome.errorContext = "policy";
        throw exc;
      }
    }
    if (bundleFile.size > MAX_BUNDLE_SIZE) {
      throw malformed("json_too_large", { what: term("trail bundle"), limit: String(MAX_BUNDLE_SIZE) });
    }
    const bundleBytes = await readFile(bundleFile);
    let digest = null;
    if (documentFile) {
      digest = await sha256(await readFile(documentFile));
      outcome.digestHex = toHex(digest);
    }
    const officeKey = $("office-key").value.trim();
    const trail = await verifyTrail(bundleBytes, {
      policy: policy,
      officeKey: officeKey ? officeKey : null,
      document: digest,
    });
    if (!policy) outcome.policyHex = toHex(await sha256(utf8(trail.policyText)));
    outcome.trail = trail;
    outcome.state = "valid";
  }

  /** The file's bytes (only the first ``limit`` if given). */
  function readFile(file, limit) {
    const blob = limit === undefined ? file : file.slice(0, limit);
    return blob.arrayBuffer().then(
      (buffer) => new Uint8Array(buffer),
      () => {
        throw pageError("read_failed", { name: file.name });
      }
    );
  }

  async function runVerification() {
    const run = ++state.run;
    state.outcome = { state: "busy" };
    renderOutcome();
    const outcome = { state: "invalid" };
    try {
      const documentFile = $("document").files[0];
      const receiptFile = $("receipt").files[0];
      if (!receiptFile) throw pageError(documentFile ? "no_receipt" : "no_document");
      if (looksLikeTrail(await readFile(receiptFile, 64))) {
        await runTrailVerification(outcome, receiptFile, documentFile);
      } else {
        await runReceiptVerification(outcome, receiptFile, documentFile);
      }
    } catch (exc) {
      outcome.error = exc instanceof LedgerError ? exc : pageError("internal", { detail: String(exc) });
      outcome.state = outcome.error.kind === "page" ? "error" : "invalid";
      outcome.trail = null;
    }
    if (run !== state.run) return; // a newer run superseded this one
    state.outcome = outcome;
    renderOutcome();
  }

  /** A document and its receipt (the page's original path; unchanged). */
  async function runReceiptVerification(outcome, receiptFile, documentFile) {
    if (!documentFile) throw pageError("no_document");
    const policyText = $("policy-text").value;
    if (!policyText.trim()) throw pageError("no_policy");
    subtle();
    const policyBytes = utf8(policyText);
    outcome.policyHex = toHex(await sha256(policyBytes));
    let policy;
    try {
      policy = await parsePolicy(policyBytes);
    } catch (exc) {
      outcome.errorContext = "policy";
      throw exc;
    }
    // The CLI refuses a receipt file above the limit before reading it; so does the page.
    const receiptBytes =
      receiptFile.size > MAX_RECEIPT_SIZE ? new Uint8Array(MAX_RECEIPT_SIZE + 1) : await readFile(receiptFile);
    const digest = await sha256(await readFile(documentFile));
    outcome.digestHex = toHex(digest);
    outcome.result = await verifyReceipt(receiptBytes, policy, digest);
    outcome.state = "valid";
  }

  async function loadPolicyFile() {
    const file = $("policy-file").files[0];
    if (!file) return;
    try {
      const bytes = await readFile(file);
      $("policy-text").value = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(bytes);
      state.policySource = { kind: "file", name: file.name };
    } catch (exc) {
      state.policySource = { kind: "fetch_failed" };
    }
    renderPolicySource();
  }

  /** The page's only request: the node's trust policy, same origin, GET, no credentials. */
  async function fetchPolicy() {
    if (location.protocol !== "http:" && location.protocol !== "https:") {
      state.policySource = { kind: "offline" };
      renderPolicySource();
      return;
    }
    try {
      const response = await fetch("/v1/policy", {
        method: "GET",
        credentials: "omit",
        cache: "no-store",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const text = await response.text();
      // A file the user picked meanwhile wins over the node's copy.
      if (!$("policy-text").value.trim()) {
        $("policy-text").value = text;
        state.policySource = { kind: "node" };
      }
    } catch (exc) {
      if (!$("policy-text").value.trim()) state.policySource = { kind: "fetch_failed" };
    }
    renderPolicySource();
    document.body.dataset.policyLoaded = "true";
  }

  /** The browser's language: Polish for pl, English otherwise; ?lang=pl|en and the switch win. */
  function initLanguage() {
    const preferred = (navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || ""])[0] || "";
    let lang = preferred.toLowerCase().split("-")[0] === "pl" ? "pl" : "en";
    const wanted = new URLSearchParams(location.search).get("lang");
    if (wanted === "en" || wanted === "pl") lang = wanted;
    state.lang = lang;
  }

  function init() {
    initLanguage();
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.addEventListener("click", () => {
        state.lang = button.dataset.lang;
        applyLanguage();
      });
    }
    $("verify").addEventListener("click", () => {
      runVerification();
    });
    $("policy-file").addEventListener("change", () => {
      loadPolicyFile();
    });
    $("policy-text").addEventListener("input", () => {
      state.policySource = null;
      renderPolicySource();
    });
    applyLanguage();
    document.body.dataset.ready = "true";
    fetchPolicy().finally(() => {
      document.body.dataset.policyLoaded = "true";
    });
  }

  // The verifier, for tests and for anyone who wants to script the page's checks.
  globalThis.LedgerVerify = Object.freeze({
    check: check,
    checkTrail: checkTrail,
    canonicalText: canonicalText,
    parseStrictJson: parseStrictJson,
    parsePolicy: parsePolicy,
    parseReceipt: parseReceipt,
    verifyReceipt: verifyReceipt,
    b64decodeStrict: b64decodeStrict,
    render: render,
    LedgerError: LedgerError,
  });

  if (typeof document !== "undefined" && document.getElementById("verify")) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
    else init();
  }
})();
