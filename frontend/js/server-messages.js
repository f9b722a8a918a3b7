// Hook for RTVI `server-message`s, dispatched by `data.type`.
//
// Later panels (charts, latency, ...) register themselves here:
//
//   import { onServerMessage } from "./server-messages.js";
//   onServerMessage("chart", (data, msg) => renderChart(data));
//
// Messages without a handler are logged to the console. Every server message is also
// re-dispatched on `window` as a "server-message" CustomEvent (detail: {type, data, msg}).

const handlers = new Map(); // type -> Set<fn>

/** Register fn(data, msg) for server messages whose data.type === type. Returns an unsubscribe. */
export function onServerMessage(type, fn) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(fn);
  return () => handlers.get(type)?.delete(fn);
}

export function dispatchServerMessage(msg) {
  const data = msg?.data ?? {};
  const type = data && typeof data === "object" ? data.type : undefined;
  window.dispatchEvent(new CustomEvent("server-message", { detail: { type, data, msg } }));
  const fns = handlers.get(type);
  if (!fns || fns.size === 0) {
    console.info(`[server-message] unhandled type ${JSON.stringify(type)}`, data);
    return;
  }
  for (const fn of fns) {
    try {
      fn(data, msg);
    } catch (err) {
      console.error(`[server-message] handler for ${type} failed:`, err);
    }
  }
}
