// Small DOM helpers shared by the console's scripts.

// A new <tag> with an optional class name (a space-separated list) and text.
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Makes `children` the parent's children, leaving the parent alone when they already are:
// taking an element out of the document, even to put it straight back, takes the focus from
// whatever inside it had it.
export function showChildren(parent, children) {
  const same = parent.children.length === children.length &&
    children.every((child, i) => parent.children[i] === child);
  if (!same) parent.replaceChildren(...children);
}
