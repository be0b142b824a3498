// Text helpers for message bodies, the composer and search highlights. Nothing here turns what a
// user typed into markup: the results are plain strings or nodes built from text.

const NAME_CHAR = /[A-Za-z0-9_.-]/;

/**
 * Splits a body into plain parts and `@username` parts, by the server's rules: an `@` that does
 * not follow a name character or another `@`, 3–32 name characters, trailing `.` and `-` not part
 * of the name. Each part is `{ text }` or `{ text, mention }` (the lower-cased username).
 */
export function splitMentions(body) {
  const parts = [];
  let plain = '';
  let i = 0;
  while (i < body.length) {
    const previous = i > 0 ? body[i - 1] : ' ';
    if (body[i] !== '@' || NAME_CHAR.test(previous) || previous === '@') {
      plain += body[i];
      i += 1;
      continue;
    }
    let end = i + 1;
    while (end < body.length && NAME_CHAR.test(body[end])) end += 1;
    let nameEnd = end;
    while (nameEnd > i + 1 && (body[nameEnd - 1] === '.' || body[nameEnd - 1] === '-')) nameEnd -= 1;
    const name = body.slice(i + 1, nameEnd);
    if (name.length >= 3 && name.length <= 32) {
      if (plain) parts.push({ text: plain });
      parts.push({ text: body.slice(i, nameEnd), mention: name.toLowerCase() });
      plain = body.slice(nameEnd, end);
    } else {
      plain += body.slice(i, end);
    }
    i = end;
  }
  if (plain) parts.push({ text: plain });
  return parts;
}

/** The `@partial` being typed just before the caret, or null: `{ start, query }`. */
export function mentionQuery(value, caret) {
  const match = value.slice(0, caret).match(/(^|[^A-Za-z0-9_.\-@])@([A-Za-z0-9_.-]{0,32})$/);
  return match ? { start: caret - match[2].length - 1, query: match[2] } : null;
}

const NAMED = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function unescapeHTML(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (entity, name) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : entity;
    }
    return NAMED[name.toLowerCase()] ?? entity;
  });
}

/**
 * Nodes for a search highlight: the server sends the body HTML-escaped with matches in
 * `<mark>…</mark>`. Only those two tags are recognised; everything else becomes text, so a
 * highlight that was not escaped shows its markup instead of running it.
 */
export function highlightNodes(html) {
  const nodes = [];
  const marks = /<mark>([\s\S]*?)<\/mark>/g;
  let last = 0;
  for (let match = marks.exec(html); match; match = marks.exec(html)) {
    if (match.index > last) nodes.push(document.createTextNode(unescapeHTML(html.slice(last, match.index))));
    const mark = document.createElement('mark');
    mark.textContent = unescapeHTML(match[1]);
    nodes.push(mark);
    last = marks.lastIndex;
  }
  if (last < html.length) nodes.push(document.createTextNode(unescapeHTML(html.slice(last))));
  return nodes;
}

/** A one-line preview of a body. */
export function preview(body, length = 100) {
  const line = body.replace(/\s+/g, ' ').trim();
  return line.length > length ? line.slice(0, length - 1) + '…' : line;
}
