// The optional API key. Browsers cannot set headers on a WebSocket, so before every connection
// the page trades the key (a bearer header on POST /api/tokens) for a short-lived one-use
// token that goes in the URL. The key is asked for only when the server answers 401, once per
// tab: it is kept in sessionStorage, which dies with the tab.

const STORAGE_KEY = "voice-agent-api-key";
const MAX_PROMPTS = 3;

export function tokensUrl(loc = window.location) {
  return new URL("api/tokens", loc.href).href;
}

/** A fresh session token, or null when the server needs none. Asks for the key on 401. */
export async function sessionToken({ url = tokensUrl(), ask = (text) => window.prompt(text) } = {}) {
  for (let prompts = 0; ; prompts++) {
    const key = sessionStorage.getItem(STORAGE_KEY);
    const res = await fetch(url, {
      method: "POST",
      headers: key ? { Authorization: `Bearer ${key}` } : {},
    });
    if (res.ok) return (await res.json()).token ?? null;
    if (res.status !== 401) throw new Error(`POST ${new URL(url).pathname} failed: HTTP ${res.status}`);
    sessionStorage.removeItem(STORAGE_KEY);
    if (prompts === MAX_PROMPTS) throw new Error("The API key was refused");
    const entered = ask(key ? "That API key was refused. API key:" : "This server needs an API key:");
    if (!entered?.trim()) throw new Error("An API key is needed to connect to this server");
    sessionStorage.setItem(STORAGE_KEY, entered.trim());
  }
}

/** `url` with `?token=` added (unchanged when token is null). */
export function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url, window.location.href);
  u.searchParams.set("token", token);
  return u.href;
}
