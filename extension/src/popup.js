/* The toolbar popup: "Scan this page" and its running summary (kept in session storage by the background worker,
 * so it survives the popup closing). */
"use strict";

/** The tab to scan: the active one; `?tab=ID` names another (the popup opened in a tab of its own, as tests do). */
async function targetTabId() {
  const named = Number(new URLSearchParams(location.search).get("tab"));
  if (named) return named;
  const [tab] = await ext.tabs.query({ active: true, currentWindow: true });
  return tab.id;
}

function describeSummary(summary) {
  if (!summary) return "";
  if (summary.error) return `Scan failed: ${summary.error}`;
  const head = summary.running ? `Scanning… ${summary.checked + summary.failed} of ${summary.total}` : `Done: ${summary.total} images`;
  const skipped = Object.values(summary.skipped || {}).reduce((sum, count) => sum + count, 0);
  return `${head} · checked ${summary.checked} · flagged ${summary.flagged} · failed ${summary.failed}` +
    (summary.reused ? ` · ${summary.reused} reused` : "") + (skipped ? ` · ${skipped} skipped (small, hidden or SVG)` : "");
}

async function showPopup() {
  const tabId = await targetTabId();
  const key = scanKey(tabId);
  const summaryLine = document.getElementById("summary");
  const button = document.getElementById("scan");
  const render = (summary) => {
    summaryLine.textContent = describeSummary(summary);
    button.disabled = Boolean(summary && summary.running);
  };
  render((await ext.storage.session.get(key))[key]);
  ext.storage.onChanged.addListener((changes, area) => {
    if (area === "session" && changes[key]) render(changes[key].newValue);
  });
  const settings = await loadSettings();
  document.getElementById("setup").hidden = Boolean(settings.apiKey);
  button.addEventListener("click", async () => {
    button.disabled = true;
    const result = await ext.runtime.sendMessage({ type: "fakewatch:scan", tabId });
    render(result);
  });
  for (const link of document.querySelectorAll(".open-options")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      ext.runtime.openOptionsPage();
    });
  }
}

showPopup();
