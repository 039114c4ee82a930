// Small helpers of every view: building elements (text always as text, never parsed as HTML), toasts, and how
// times, durations and sizes read.

export const $ = (selector) => document.querySelector(selector);

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "style") Object.assign(element.style, value); // CSSOM: the page's CSP allows no style attributes
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function toast(message, kind = "error") {
  const note = h("div", { class: `toast ${kind}` }, message);
  $("#toasts").append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

export function clock(ms) {
  if (!ms) return "";
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

// "12 s ago", "3 min ago": how long ago, to the unit that matters
export function ago(ms, now = Date.now()) {
  if (!ms) return "";
  const seconds = Math.max(0, (now - ms) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  return `${duration(seconds)} ago`;
}

export function mib(value) {
  if (value === null || value === undefined) return "?";
  return value >= 1024 ** 3 ? `${(value / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(value / 1024 ** 2)} MiB`;
}
