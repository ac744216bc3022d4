// Confirmation before an operator action: a modal <dialog> named by its heading and described by its text.
// Focus starts on Cancel, Escape cancels, and the browser returns focus to the button that opened it.

import { h } from "./dom.js";

let dialogCount = 0;

/** Ask before doing something; resolves true when the operator confirms. */
export function confirmDialog({ title, message, confirm, danger = false }) {
  dialogCount += 1;
  const titleId = `dialog-title-${dialogCount}`;
  const textId = `dialog-text-${dialogCount}`;
  return new Promise((resolve) => {
    let confirmed = false;
    const cancel = h("button", { type: "button", class: "button-secondary" }, "Cancel");
    const ok = h("button", { type: "button", class: danger ? "button-danger" : null }, confirm);
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": titleId, "aria-describedby": textId },
      h("h2", { id: titleId }, title),
      h("p", { id: textId }, message),
      h("div", { class: "dialog-buttons" }, cancel, ok));
    cancel.addEventListener("click", () => dialog.close());
    ok.addEventListener("click", () => {
      confirmed = true;
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(confirmed);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/**
 * A button that asks first, then runs `action()`; the outcome is announced in `status` (a live region).
 * `confirmation` is confirmDialog's argument; `done(result)` returns the message to announce.
 */
export function actionButton({ label, confirmation, action, status, done, danger = false }) {
  const button = h("button", { type: "button", class: danger ? "button-danger" : null }, label);
  button.addEventListener("click", async () => {
    if (!(await confirmDialog({ ...confirmation, danger }))) return;
    button.disabled = true;
    status.className = "action-status";
    status.textContent = "Working…";
    let result;
    try {
      result = await action();
    } catch (error) {
      button.disabled = false;
      status.className = "action-status action-error";
      status.textContent = `${label} failed: ${error.message}`;
      return;
    }
    button.disabled = false; // done() may disable it again for the new state
    status.textContent = done ? done(result) : "Done.";
  });
  return button;
}
