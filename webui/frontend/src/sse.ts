// A server-sent events parser for text that arrives in chunks, as fetch
// streams it. The page reads a fan-out's events this way rather than
// through EventSource: Chromium's EventSource parses every byte on the
// page's main thread outside JavaScript, and a 250-host ping all is 24 MB
// of events. Pure: the tests feed it by hand.

export interface SSEEvent {
  type: string; // "message" when the event names none
  data: string;
}

// sseParser returns a function that takes the next chunk of the stream
// and returns the events it completed, in order.
export function sseParser(): (chunk: string) => SSEEvent[] {
  let buf = "";
  let cr = false; // the last chunk ended in a CR, whose LF may start this one
  return (chunk) => {
    // Where an event's end can be: a boundary may straddle two chunks.
    let from = Math.max(0, buf.length - 1);
    if (cr && chunk.startsWith("\n")) chunk = chunk.slice(1);
    cr = chunk.endsWith("\r");
    buf += chunk.includes("\r") ? chunk.replace(/\r\n?/g, "\n") : chunk;
    const out: SSEEvent[] = [];
    let start = 0;
    for (;;) {
      const end = buf.indexOf("\n\n", from);
      if (end < 0) break;
      const ev = parseBlock(buf.slice(start, end));
      if (ev) out.push(ev);
      start = end + 2;
      from = start;
    }
    buf = buf.slice(start);
    return out;
  };
}

// parseBlock parses one event's lines; null when it has no data (a
// comment, or a retry line alone).
function parseBlock(block: string): SSEEvent | null {
  let type = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  return data.length > 0 ? { type, data: data.join("\n") } : null;
}
