/* fakewatch settings, and the storage keys the extension's pages share: kept in extension storage (never in globals:
 * the background worker is stopped when idle). Shared by the background worker, the popup and the options page
 * (classic script: defines globals). */
"use strict";

const ext = globalThis.browser ?? globalThis.chrome;

const DEFAULT_SETTINGS = Object.freeze({
  serverUrl: "http://127.0.0.1:8000",
  apiKey: "",
  adminUrl: "http://127.0.0.1:8501",
  autoScan: false,
  // Images smaller than this (CSS pixels, either side) are icons, spacers or tracking pixels.
  minSize: 64,
});

/** Trim a base URL and drop trailing slashes so paths can be appended. */
function normalizeBaseUrl(value) {
  return String(value ?? "").trim().replace(/\/+$/, "");
}

/** A base URL the extension may talk to, or an error message a person understands. */
function validateBaseUrl(value, label) {
  const text = normalizeBaseUrl(value);
  let url;
  try {
    url = new URL(text);
  } catch {
    return `${label} must be a full address such as http://127.0.0.1:8000.`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `${label} must start with http:// or https://.`;
  }
  return null;
}

/** Where a tab's scan progress lives in session storage: the background worker writes it, the popup shows it. */
function scanKey(tabId) {
  return `scan:${tabId}`;
}

async function loadSettings() {
  const stored = await ext.storage.local.get(Object.keys(DEFAULT_SETTINGS));
  return { ...DEFAULT_SETTINGS, ...stored };
}

/** Settings as they are stored and used: base URLs normalised, the key without stray spaces (pasted keys often have them). */
function cleanSettings(values) {
  return {
    serverUrl: normalizeBaseUrl(values.serverUrl),
    apiKey: String(values.apiKey ?? "").trim(),
    adminUrl: normalizeBaseUrl(values.adminUrl),
    autoScan: Boolean(values.autoScan),
    minSize: Math.max(1, Number(values.minSize) || DEFAULT_SETTINGS.minSize),
  };
}

async function saveSettings(values) {
  const clean = cleanSettings(values);
  await ext.storage.local.set(clean);
  return clean;
}
