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

function report(message, ok) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = ok ? "ok" : "problem";
}

async function saveForm(event) {
  event.preventDefault();
  const values = readForm();
  const problem = validateBaseUrl(values.serverUrl, "The server URL") ||
    (values.adminUrl ? validateBaseUrl(values.adminUrl, "The console URL") : null);
  if (problem) return report(problem, false);
  fillForm(await saveSettings(values));
  report("Saved.", true);
}

async function testForm() {
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
