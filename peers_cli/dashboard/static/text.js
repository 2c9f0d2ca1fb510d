// Peer-written text, made safe to show: the project's one rule (peers_mcp/render.py
// `clean`), mirrored here and checked against it by tests/test_dashboard_browser.py.
// C0 and C1 controls but tab and newline, the Unicode line and paragraph separators, and
// the bidirectional marks, embeddings, overrides and isolates are shown as escapes.
// The page only ever puts the result in textContent, never in HTML.

function visible(c) {
  if ((c < 32 && c !== 9 && c !== 10) || (c >= 127 && c < 160)) {
    return "\\x" + c.toString(16).padStart(2, "0");
  }
  if (
    c === 0x2028 || c === 0x2029 || c === 0x061c || c === 0x200e || c === 0x200f ||
    (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)
  ) {
    return "\\u" + c.toString(16).padStart(4, "0");
  }
  return null;
}

export function clean(text) {
  if (text === null || text === undefined) return "";
  let out = "";
  for (const ch of String(text)) {
    const shown = visible(ch.codePointAt(0));
    out += shown === null ? ch : shown;
  }
  return out;
}

export function inline(text) {
  return clean(text).replaceAll("\n", "\\n");
}
