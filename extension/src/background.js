/* The background worker: context menu, "Scan this page", auto-scan registration.
 * Listeners are registered at the top level and nothing lives in globals: Chromium stops this worker when idle,
 * so settings and scan progress live in extension storage. Firefox loads the same files as background scripts. */
"use strict";

if (typeof importScripts === "function") importScripts("settings.js", "api.js", "images.js", "videos.js");

const MENU_ID = "fakewatch-check-image";
const VIDEO_MENU_ID = "fakewatch-check-video";
const AUTOSCAN_SCRIPT_ID = "fakewatch-autoscan";
// Images checked at once during a page scan: enough to keep a worker busy, few enough not to flood the server.
const SCAN_CONCURRENCY = 3;
const VERDICT_LABELS = { real: "Real", fake: "Fake", uncertain: "Uncertain" };
// When the model decides, it finds generator traces or does not: a low score reads "No AI traces", never "Real"
// (docs/detector.md). Other evidence (a review, provenance) keeps the verdict's own word.
const MODEL_LABELS = { real: "No AI traces", fake: "AI traces", uncertain: "Uncertain" };
// What decided a verdict when the model did not: the badge names it instead of a confidence.
const SOURCE_LABELS = { provenance: "provenance", match: "Near-duplicate", review: "Moderator" };

ext.runtime.onInstalled.addListener(createMenus);
ext.contextMenus.onClicked.addListener(handleMenuClick);
ext.runtime.onMessage.addListener(handleMessage);
ext.storage.onChanged.addListener(handleStorageChange);

function createMenus() {
  ext.contextMenus.create({ id: MENU_ID, title: "Check image with fakewatch", contexts: ["image"] });
  ext.contextMenus.create({ id: VIDEO_MENU_ID, title: "Check video with fakewatch", contexts: ["video"] });
  loadSettings().then((settings) => syncAutoScan(settings.autoScan));
}

/** The context menu's handler (also what tests call): check the clicked image or video and badge it. */
async function handleMenuClick(info, tab) {
  if (![MENU_ID, VIDEO_MENU_ID].includes(info.menuItemId) || !tab || !info.srcUrl) return null;
  const target = { tabId: tab.id, frameId: info.frameId || 0, srcUrl: info.srcUrl, pageUrl: info.frameUrl || info.pageUrl || tab.url };
  await injectContentScript(target.tabId, target.frameId);
  if (info.menuItemId === VIDEO_MENU_ID) return checkVideo(target, await loadSettings());
  return checkImage(target, await loadSettings(), { reuse: false });
}

function handleMessage(message, sender, sendResponse) {
  // The popup names the tab to scan; a page scanned automatically asks for its own.
  const fromPopup = message?.type === "fakewatch:scan";
  if (!fromPopup && !(message?.type === "fakewatch:autoscan" && sender.tab)) return false;
  scanTab(fromPopup ? message.tabId : sender.tab.id).then(sendResponse, (error) => sendResponse({ error: error.message }));
  return true;
}

function handleStorageChange(changes, area) {
  if (area === "local" && changes.autoScan) syncAutoScan(Boolean(changes.autoScan.newValue));
}

/** Register the auto-scan content script only while the switch is on, so pages are untouched by default. */
async function syncAutoScan(enabled) {
  const registered = await ext.scripting.getRegisteredContentScripts({ ids: [AUTOSCAN_SCRIPT_ID] });
  if (enabled && registered.length === 0) {
    await ext.scripting.registerContentScripts([{
      id: AUTOSCAN_SCRIPT_ID, matches: ["http://*/*", "https://*/*"], js: ["content.js", "autoscan.js"], runAt: "document_idle",
    }]);
  } else if (!enabled && registered.length > 0) {
    await ext.scripting.unregisterContentScripts({ ids: [AUTOSCAN_SCRIPT_ID] });
  }
}

async function injectContentScript(tabId, frameId) {
  await ext.scripting.executeScript({ target: { tabId, frameIds: [frameId] }, files: ["content.js"] });
}

async function sendBadge(target, badge) {
  try {
    await ext.tabs.sendMessage(target.tabId, { type: "fakewatch:badge", srcUrl: target.srcUrl, badge }, { frameId: target.frameId });
  } catch {
    // The tab navigated away or closed: nobody is left to see this badge.
  }
}

/** Check one image end to end and leave its badge; returns the check, or {error} with what went wrong. */
async function checkImage(target, settings, { reuse }) {
  const progress = (words) => sendBadge(target, { state: "pending", text: words });
  try {
    let cached = reuse ? await readCachedResult(settings, target.srcUrl) : null;
    if (cached) {
      // Re-read, not re-scored: a moderator may have labelled (or relabelled) the image since.
      cached = await readCheck(settings, cached.id).then(finishedCheck).catch(() => cached);
      await writeCachedResult(settings, target.srcUrl, cached);
      await sendBadge(target, verdictBadge(cached, settings, ["Reused from an earlier check."]));
      return { check: cached, reused: true };
    }
    await progress("Reading image…");
    let blob = await readImageBytes(target);
    const notes = [];
    if (needsShrinking(blob)) {
      await progress("Resizing…");
      blob = await shrinkImage(blob);
      notes.push("Resized before checking (larger than the server accepts).");
    }
    let check;
    try {
      check = await submitCheck(settings, blob, target, progress);
    } catch (error) {
      if (error.code !== "too_many_pixels" && error.code !== "too_large") throw error;
      await progress("Resizing…");
      check = await submitCheck(settings, await shrinkImage(blob), target, progress);
      notes.push("Resized before checking (more pixels than the server accepts).");
    }
    await writeCachedResult(settings, target.srcUrl, check);
    await sendBadge(target, verdictBadge(check, settings, notes));
    return { check, reused: false };
  } catch (error) {
    const failure = error instanceof CheckError ? error : new CheckError("error", "Check failed", String(error.message || error));
    await sendBadge(target, { state: "error", text: failure.short, details: [failure.detail] });
    return { error: { code: failure.code, message: failure.detail } };
  }
}

/** The evidence named on a badge ("Content Credentials" of "AI: Content Credentials, OpenAI"). */
function evidenceName(check) {
  const summary = check.provenance?.summary || "";
  if (check.verdict_source !== "provenance") return SOURCE_LABELS[check.verdict_source] || "";
  const named = summary.includes(": ") ? summary.split(": ")[1].split(/[,;]/)[0].trim() : "";
  if (named) return named;
  return summary.includes("Content Credentials") ? "Content Credentials" : SOURCE_LABELS.provenance;
}

/** The badge's words: "AI traces 83%" or "No AI traces 83%" when the model decides, "Uncertain · out of scope" for
 * images the model is not for, "Reviewed: real" when a moderator's label of these bytes does (the label is the
 * verdict), "Fake · Content Credentials" for other evidence (whose confidence is null). */
function badgeText(check, label, byModel) {
  if (check.verdict_source === "review") return `Reviewed: ${check.verdict}`;
  if (check.reason) return "Uncertain · out of scope"; // the reason itself is in the details
  const words = MODEL_LABELS[check.verdict] || label;
  return byModel ? `${words} ${Math.round(Number(check.confidence) * 100)}%` : `${label} · ${evidenceName(check)}`;
}

function verdictBadge(check, settings, notes) {
  const label = VERDICT_LABELS[check.verdict] || "Unknown";
  const byModel = check.confidence !== null && check.confidence !== undefined;
  const details = [];
  const summary = check.provenance?.summary;
  if (summary) details.push(summary); // "AI: Content Credentials, OpenAI"
  if (check.reason) details.push(check.reason); // "out of scope: flat or near-empty image"
  if (!byModel && check.verdict_source) details.push(`Decided by ${check.verdict_source} evidence, not by the model.`);
  details.push(`Model: ${check.model_version}`, `Probability of fake: ${Number(check.score).toFixed(2)}`);
  details.push(check.review ? `Moderator label: ${check.review.label} (by ${check.review.by})` : "Not reviewed by a moderator yet.");
  const sha256 = check.image && check.image.sha256;
  const link = settings.adminUrl && sha256
    ? { href: `${settings.adminUrl}/image?sha256=${encodeURIComponent(sha256)}`, text: "Open in the fakewatch console" }
    : null;
  return {
    state: check.verdict || "error",
    text: badgeText(check, label, byModel),
    heatmap: Array.isArray(check.regions) && check.regions.length && check.image
      ? { regions: check.regions, width: check.image.width, height: check.image.height } : null,
    details: details.concat(notes),
    link,
  };
}

// --- results reused within this browser session, per server and image address ---------------------------------

async function resultKey(settings, url) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${settings.serverUrl}\n${url}`));
  return "result:" + Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function readCachedResult(settings, url) {
  const key = await resultKey(settings, url);
  return (await ext.storage.session.get(key))[key] || null;
}

async function writeCachedResult(settings, url, check) {
  const { id, status, verdict, score, confidence, flagged, model_version, image, review, verdict_source, regions,
    reason, verdict_text } = check;
  // Of the provenance, only what a badge shows: session storage is small.
  const provenance = { summary: check.provenance?.summary || "" };
  await ext.storage.session.set({ [await resultKey(settings, url)]: {
    id, status, verdict, score, confidence, flagged, model_version, image, review, verdict_source, provenance, regions,
    reason, verdict_text } });
}

// --- "Scan this page" ---------------------------------------------------------------------------------------------

/** Badge every eligible image of the tab's page as verdicts arrive; progress goes to storage for the popup. */
async function scanTab(tabId) {
  await injectContentScript(tabId, 0);
  const settings = await loadSettings();
  const tab = await ext.tabs.get(tabId);
  const found = await ext.tabs.sendMessage(tabId, { type: "fakewatch:collect", minSize: settings.minSize }, { frameId: 0 });
  const summary = { running: true, pageUrl: tab.url, total: found.images.length, checked: 0, flagged: 0, failed: 0, reused: 0, skipped: found.skipped };
  const publish = () => ext.storage.session.set({ [scanKey(tabId)]: { ...summary } });
  await publish();
  const queue = found.images.slice();
  const scanNext = async () => {
    for (let url = queue.shift(); url !== undefined; url = queue.shift()) {
      const outcome = await checkImage({ tabId, frameId: 0, srcUrl: url, pageUrl: tab.url }, settings, { reuse: true });
      if (outcome.error) summary.failed += 1;
      else {
        summary.checked += 1;
        summary.flagged += outcome.check.flagged ? 1 : 0;
        summary.reused += outcome.reused ? 1 : 0;
      }
      await publish();
    }
  };
  await Promise.all(Array.from({ length: SCAN_CONCURRENCY }, scanNext));
  summary.running = false;
  await publish();
  return summary;
}
