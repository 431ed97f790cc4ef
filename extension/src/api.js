/* Talking to the fakewatch API (docs/api.md, "Checks": POST /api/v1/checks, GET /api/v1/checks/<id>).
 * The API key is only ever sent to the configured server: every request is built from settings.serverUrl here. */
"use strict";

// How long POST waits server-side for a verdict before answering 202 (the server caps it too).
const SUBMIT_WAIT_S = 10;
const POLL_INTERVAL_MS = 1000;
const POLL_TIMEOUT_MS = 120_000;
// The server refuses longer form fields (backend/api/checks.py MAX_FIELD_CHARS).
const MAX_FIELD_CHARS = 2048;

/** An error worth showing on a badge: `short` fits on the badge, `detail` goes in its tooltip. */
class CheckError extends Error {
  constructor(code, short, detail) {
    super(detail || short);
    this.code = code;
    this.short = short;
    this.detail = detail || short;
  }
}

// Words a person understands, by the API's stable error codes (and a few of the extension's own).
const ERROR_WORDS = {
  unreachable: "Server unreachable",
  unauthorized: "API key rejected",
  no_api_key: "No API key set",
  too_large: "Image too large",
  too_many_pixels: "Image too large",
  unsupported_format: "Image format not supported",
  invalid_image: "Not an image",
  not_image: "Not an image",
  svg: "SVG drawing: not checked",
  rate_limited: "Too many checks: retry soon",
  no_active_model: "Server has no model yet",
  fetch_failed: "Image could not be downloaded",
  timeout: "No verdict yet: retry later",
  not_fakewatch: "Not a fakewatch server",
  // A <video>'s frame on screen (extension/src/videos.js).
  tainted_frame: "Frame not readable: cross-origin video",
  no_frame: "No frame to check yet",
  video_not_found: "Video not found on the page",
  // The server's video refusals (docs/video.md).
  video_too_long: "Video too long",
  frame_too_large: "Video frames too large",
  too_many_frames: "Video has too many frames",
  decode_timeout: "Video took too long to decode",
  invalid_video: "Not a playable video",
  no_video_stream: "No video stream",
  unsupported_codec: "Video codec not supported",
};

function errorFromCode(code, detail) {
  return new CheckError(code, ERROR_WORDS[code] || "Check failed", detail);
}

/** Call the configured server; JSON body back, or a CheckError with words a person understands. */
async function callApi(settings, path, init = {}) {
  if (!settings.apiKey) {
    throw errorFromCode("no_api_key", "Set the API key in the extension's options (fakewatch keys create NAME).");
  }
  const headers = { ...(init.headers || {}), Authorization: `Bearer ${settings.apiKey}` };
  let response;
  try {
    response = await fetch(`${settings.serverUrl}${path}`, { ...init, headers, credentials: "omit" });
  } catch (error) {
    throw errorFromCode("unreachable", `Could not reach ${settings.serverUrl}: is fakewatch running (fakewatch up)? (${error.message})`);
  }
  const body = await response.json().catch(() => null);
  if (response.ok && body) return { status: response.status, body };
  const apiError = body && body.error;
  if (apiError && apiError.code) throw errorFromCode(apiError.code, apiError.message);
  throw errorFromCode("not_fakewatch", `${settings.serverUrl} answered HTTP ${response.status} without a fakewatch error: check the server URL.`);
}

function isHttpUrl(value) {
  return /^https?:\/\//i.test(value || "");
}

/** The multipart body of docs/api.md's "Checks": `image`, and where it came from when that fits the server's limits. */
function buildCheckForm(blob, target) {
  const form = new FormData();
  const extension = (blob.type.split("/")[1] || "bin").replace("jpeg", "jpg");
  form.append("image", blob, `image.${extension}`);
  if (isHttpUrl(target.srcUrl) && target.srcUrl.length <= MAX_FIELD_CHARS) form.append("image_url", target.srcUrl);
  if (isHttpUrl(target.pageUrl) && target.pageUrl.length <= MAX_FIELD_CHARS) form.append("page_url", target.pageUrl);
  form.append("source", "extension");
  return form;
}

const FINAL_STATUSES = new Set(["done", "failed", "cancelled"]);
const STATUS_WORDS = { queued: "Waiting for a worker…", running: "Scoring…" };

/** Upload the image and return the finished check, reporting progress words through onProgress. */
async function submitCheck(settings, blob, target, onProgress) {
  onProgress("Uploading…");
  const { body } = await callApi(settings, `/api/v1/checks?wait=${SUBMIT_WAIT_S}`, {
    method: "POST",
    body: buildCheckForm(blob, target),
  });
  return FINAL_STATUSES.has(body.status) ? finishedCheck(body) : waitForCheck(settings, body, onProgress);
}

async function waitForCheck(settings, check, onProgress) {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  let current = check;
  while (!FINAL_STATUSES.has(current.status)) {
    if (Date.now() > deadline) throw errorFromCode("timeout", `Check ${check.id} is still ${current.status}; the server may be busy.`);
    onProgress(STATUS_WORDS[current.status] || "Checking…");
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    current = (await callApi(settings, `/api/v1/checks/${encodeURIComponent(check.id)}`)).body;
  }
  return finishedCheck(current);
}

/** The check as the server reads it now: a moderator's label since it was first read changes its verdict. */
async function readCheck(settings, checkId) {
  return (await callApi(settings, `/api/v1/checks/${encodeURIComponent(checkId)}`)).body;
}

/** A done check, or its failure as a CheckError. */
function finishedCheck(check) {
  if (check.status === "done") return check;
  if (check.status === "cancelled") throw new CheckError("cancelled", "Check cancelled", `Check ${check.id} was cancelled.`);
  const error = check.error || {};
  throw errorFromCode(error.code || "failed", error.message || `Check ${check.id} failed.`);
}

/** What is wrong with this server URL and key, in words; `ok` when a check would go through. A keyed /readyz
 * names the active model version and, when the server is not ready, its reasons (an anonymous one gives only the
 * status). */
async function testConnection(settings) {
  const problem = validateBaseUrl(settings.serverUrl, "The server URL");
  if (problem) return { ok: false, message: problem };
  const headers = settings.apiKey ? { Authorization: `Bearer ${settings.apiKey}` } : {};
  let response;
  try {
    response = await fetch(`${settings.serverUrl}/readyz`, { headers, credentials: "omit" });
  } catch {
    return { ok: false, message: `Server unreachable at ${settings.serverUrl}: is fakewatch running (fakewatch up)?` };
  }
  const ready = await response.json().catch(() => null);
  if (!ready || !ready.status) {
    return { ok: false, message: `${settings.serverUrl} answers, but it is not a fakewatch API: check the URL (the API, not the console).` };
  }
  if (!settings.apiKey) return { ok: false, message: "The server is up. Now set an API key (fakewatch keys create NAME)." };
  try {
    // Any id: a 404 proves the key was accepted, a 401 that it was not.
    await callApi(settings, "/api/v1/checks/connection-test");
  } catch (error) {
    if (error.code !== "not_found") return { ok: false, message: `${error.short}: ${error.detail}` };
  }
  if (ready.status !== "ready") {
    // Without its database the server cannot check the key, so it gives no reasons.
    const problems = Object.values(ready.problems || {}).join("; ") || "no reason given (its database may be down)";
    return { ok: false, message: `Key accepted, but the server is not ready: ${problems}` };
  }
  return { ok: true, message: `Connected: key accepted, active model ${ready.model_version}.` };
}
