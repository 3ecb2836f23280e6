// Server-Sent Events read with fetch(): the browser's EventSource cannot send an Authorization
// header, and the API key must never travel in a URL. This is the subset of the SSE format dialerd
// writes: "event:", "id:", "data:" and "retry:" fields, ":" comments, messages ended by a blank line.

export class HttpError extends Error {
  constructor(status, message, errorId) {
    super(message);
    this.status = status;
    this.errorId = errorId;
  }
}

/** Turns a failed response into an HttpError carrying dialerd's {"error", "error_id"} body. */
export async function httpError(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let errorId = null;
  try {
    const body = await resp.json();
    message = body.error ?? message;
    errorId = body.error_id ?? null;
  } catch {
    // not JSON (a proxy's error page): the status line will do
  }
  return new HttpError(resp.status, message, errorId);
}

/**
 * Reads one SSE response until the server closes it or `signal` aborts.
 * Calls onMessage({event, id, data}) per message (data parsed as JSON), onId(id) whenever the
 * stream's position moves (including the id-only opening frame) and onComment(text) per comment.
 */
export async function readEventStream(url, { headers, signal, onMessage, onId, onComment, onRetry }) {
  const resp = await fetch(url, {
    headers: { ...headers, Accept: "text/event-stream" },
    signal,
    cache: "no-store",
  });
  if (!resp.ok) throw await httpError(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let fields = { event: null, id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop(); // an incomplete line waits for the next chunk
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (fields.id !== null) onId?.(fields.id);
        if (fields.data.length) {
          onMessage({ event: fields.event, id: fields.id, data: JSON.parse(fields.data.join("\n")) });
        }
        fields = { event: null, id: null, data: [] };
      } else if (line.startsWith(":")) {
        onComment?.(line.slice(1).trim());
      } else {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (name === "data") fields.data.push(val);
        else if (name === "event") fields.event = val;
        else if (name === "id") fields.id = val;
        else if (name === "retry" && /^\d+$/.test(val)) onRetry?.(Number(val));
      }
    }
  }
}
