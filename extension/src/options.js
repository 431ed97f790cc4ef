/* The options page: server URL, API key, console URL, auto-scan switch, and a connection test. */
"use strict";

const FIELDS = ["serverUrl", "apiKey", "adminUrl", "minSize"];

function readForm() {
  const values = Object.fromEntries(FIELDS.map((name) => [name, document.getElementById(name).value]));
  values.autoScan = document.getElementById("autoScan").checked;
  return cleanSettings(values);
}

function fillForm(settings) {
  for (const name of FIELDS) document.getElementById(name).value = settings[name];
  document.getElementById("autoScan").checked = settings.autoScan;
}

let latestAction = 0;

/** The status line for one action (a save, a test). A later action supersedes it: a test still waiting on a server
 * that never answered must not write "Server unreachable" over what a later save found. */
function reporter() {
  const action = ++latestAction;
  return (message, ok) => {
    if (action !== latestAction) return;
    const status = document.getElementById("status");
    status.textContent = message;
    status.className = ok ? "ok" : "problem";
  };
}

async function saveForm(event) {
  event.preventDefault();
  const report = reporter();
  const values = readForm();
  const problem = validateBaseUrl(values.serverUrl, "The server URL") ||
    (values.adminUrl ? validateBaseUrl(values.adminUrl, "The console URL") : null);
  if (problem) return report(problem, false);
  const saved = await saveSettings(values);
  fillForm(saved);
  report("Saved. Testing the connection…", true);
  const result = await testConnection(saved);
  report(`Saved. ${result.message}`, result.ok);
}

async function testForm() {
  const report = reporter();
  report("Testing…", true);
  const result = await testConnection(readForm());
  report(result.message, result.ok);
}

async function showOptions() {
  fillForm(await loadSettings());
  document.getElementById("options").addEventListener("submit", saveForm);
  document.getElementById("test").addEventListener("click", testForm);
}

showOptions();
