// DOM helpers shared by the dashboard (app.js) and the operator console (console.js). Both pages
// load this file first (deferred scripts run in document order) and take the helpers from
// `window.clipstreamDom`.
"use strict";

window.clipstreamDom = Object.freeze({
  // The element with this id.
  byId: (id) => document.getElementById(id),

  // A new element: each prop is its class, its text, a data-/aria- attribute or a property;
  // then its children. Text always goes in as text, never as markup.
  el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children);
    return node;
  },
});
