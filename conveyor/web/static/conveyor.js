// Conveyor's few lines of script: the pages work without it; it keeps them live.
"use strict";

// The dashboard fetches its board again every few seconds; a 304 means nothing changed.
function refreshBoard(board) {
  let etag = null;
  setInterval(async () => {
    if (document.hidden) return;
    const headers = etag ? { "If-None-Match": etag } : {};
    try {
      const response = await fetch(board.dataset.refresh, { headers, credentials: "same-origin" });
      if (response.status !== 200) return;
      etag = response.headers.get("ETag");
      board.innerHTML = await response.text();
    } catch (_) { /* offline for a moment: try again at the next tick */ }
  }, 5000);
}

// The task log arrives as server-sent events; step states change in place, and when the page's
// shape changes (an interruption, a child, the task's state) it renders again, unless the
// person is writing a note: then it says so and waits.
function followTask(task) {
  const source = new EventSource(task.dataset.events);
  const typing = () => [...task.querySelectorAll("textarea")].some((t) => t.value.trim());
  const renderAgain = () => {
    if (typing()) task.querySelector("#task-changed").hidden = false;
    else window.location.reload();
  };

  source.addEventListener("line", (event) => {
    const line = JSON.parse(event.data);
    const log = task.querySelector(`pre[data-step="${line.step ?? ""}"]`);
    if (!log) return;
    const row = document.createElement("span");
    row.className = `line level-${line.level}`;
    const at = document.createElement("time");
    at.textContent = line.at.slice(11, 19);
    row.append(at, " ");
    if (line.target) {
      const target = document.createElement("span");
      target.className = "target";
      target.textContent = `[${line.target}]`;
      row.append(target, " ");
    }
    row.append(line.line);
    log.append(row);
  });
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data);
    for (const [index, step] of Object.entries(status.steps)) {
      const badge = task.querySelector(`[data-step-state="${index}"]`);
      if (badge) { badge.textContent = step.label; badge.className = `badge badge-${step.state}`; }
    }
    if (status.signature !== task.dataset.signature) {
      task.dataset.signature = status.signature;
      renderAgain();
    }
  });
  source.addEventListener("end", () => source.close());
  source.addEventListener("problem", () => source.close());
}

// The step rows a person opened or closed stay so when the page renders itself again (a task
// that ends reloads it): their choices are kept for this page in the tab's session storage.
const openKey = () => `conveyor-open:${window.location.pathname}`;
function chosenRows() {
  try { return JSON.parse(sessionStorage.getItem(openKey()) || "{}") || {}; } catch (_) { return {}; }
}
function followOpenSteps() {
  for (const [id, open] of Object.entries(chosenRows())) {
    const row = document.getElementById(id);
    if (row && row.matches("details.step-log")) row.open = open;
  }
  for (const row of document.querySelectorAll("details.step-log[id]")) {
    row.querySelector("summary").addEventListener("click", () => {
      const rows = chosenRows();
      rows[row.id] = !row.open; // the click toggles the row after this handler
      try { sessionStorage.setItem(openKey(), JSON.stringify(rows)); } catch (_) { /* none */ }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  followOpenSteps();
  const board = document.querySelector("[data-refresh]");
  if (board) refreshBoard(board);
  const task = document.querySelector("#task[data-events]");
  if (task && !("finished" in task.dataset)) followTask(task);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // A button that asks first (Abort): once confirmed, it ticks its form's "I am sure" box.
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) { event.preventDefault(); return; }
      const sure = button.form && button.form.querySelector('input[name="sure"]');
      if (sure) sure.checked = true;
    });
  }
  for (const link of document.querySelectorAll("a[data-back]")) {
    link.addEventListener("click", (event) => {
      if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
    });
  }
});
