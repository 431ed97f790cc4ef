/* Checking a <video> (classic script: defines globals; the background worker loads it after api.js and images.js).
 * A video with an http(s) source goes to the server as a URL check: the server fetches and samples the whole clip
 * (docs/video.md). A stream with no address the server can fetch (blob: or MediaSource, or a source the server
 * could not download) is checked by the frame on screen instead, which the content script draws to a canvas. */
"use strict";

// A URL check the server could not carry out: the frame on screen is still worth checking.
const SERVER_FETCH_CODES = new Set(["fetch_failed", "blocked_address"]);

/** 0:03, 1:02:05: where the frame on screen was in the video. */
function clockTime(seconds) {
  const whole = Math.max(0, Math.floor(Number(seconds) || 0));
  const [hours, minutes, secs] = [Math.floor(whole / 3600), Math.floor((whole % 3600) / 60), whole % 60];
  const pad = (value) => String(value).padStart(2, "0");
  return hours > 0 ? `${hours}:${pad(minutes)}:${pad(secs)}` : `${minutes}:${pad(secs)}`;
}

/** The JSON URL check of docs/video.md's "Sending a video", waited for like an upload. */
async function submitUrlCheck(settings, target, onProgress) {
  onProgress("Sending the video's address…");
  const body = { url: target.srcUrl };
  if (isHttpUrl(target.pageUrl) && target.pageUrl.length <= MAX_FIELD_CHARS) body.page_url = target.pageUrl;
  const { body: check } = await callApi(settings, `/api/v1/checks?wait=${SUBMIT_WAIT_S}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  return FINAL_STATUSES.has(check.status) ? finishedCheck(check) : waitForCheck(settings, check, onProgress);
}

/** The frame the page shows now, as a PNG Blob and its time; CheckError when the page may not read it. */
async function readFrameViaPage(target) {
  const reply = await ext.tabs.sendMessage(target.tabId, { type: "fakewatch:frame", url: target.srcUrl }, { frameId: target.frameId });
  if (!reply || reply.error) {
    throw errorFromCode((reply && reply.code) || "no_frame", (reply && reply.error) || "The page did not answer.");
  }
  return { blob: await (await fetch(reply.dataUrl)).blob(), timeS: reply.time_s };
}

/** The verdict badge of a video check: the clip's verdict and how many frames it rests on. */
function videoBadge(check, settings, notes) {
  const badge = verdictBadge(check, settings, notes);
  const frames = Array.isArray(check.frames) ? check.frames.length : 0;
  if (check.media === "video" && frames > 0) {
    badge.text += ` · ${frames} frame${frames === 1 ? "" : "s"}`;
    badge.details.unshift(`Video of ${Number(check.duration_s).toFixed(1)} s: ${frames} sampled frames scored.`);
  }
  return badge;
}

/** Check the frame on screen as a still; its badge says which frame. */
async function checkVideoFrame(target, settings, notes) {
  const progress = (words) => sendBadge(target, { state: "pending", text: words });
  try {
    await progress("Reading the frame on screen…");
    const { blob, timeS } = await readFrameViaPage(target);
    const frameTarget = { ...target, srcUrl: isHttpUrl(target.srcUrl) ? target.srcUrl : "" };
    const check = await submitCheck(settings, blob, frameTarget, progress);
    const when = clockTime(timeS);
    const badge = verdictBadge(check, settings, [...notes,
      `Only the frame on screen at ${when} was checked, not the whole video.`]);
    badge.text += ` · frame at ${when} checked`;
    await sendBadge(target, badge);
    return { check, frame: { time_s: timeS } };
  } catch (error) {
    return failVideo(target, error);
  }
}

async function failVideo(target, error) {
  const failure = error instanceof CheckError ? error : new CheckError("error", "Check failed", String(error.message || error));
  await sendBadge(target, { state: "error", text: failure.short, details: [failure.detail] });
  return { error: { code: failure.code, message: failure.detail } };
}

/** Check one video end to end and badge it: its address when the server can fetch it, else the frame on screen. */
async function checkVideo(target, settings) {
  if (!isHttpUrl(target.srcUrl) || target.srcUrl.length > MAX_FIELD_CHARS) {
    const why = target.srcUrl.startsWith("blob:") || !target.srcUrl
      ? "The page plays a stream (blob: or MediaSource) with no address the server can fetch."
      : "The video's address cannot be sent to the server.";
    return checkVideoFrame(target, settings, [why]);
  }
  const progress = (words) => sendBadge(target, { state: "pending", text: words });
  try {
    const check = await submitUrlCheck(settings, target, progress);
    await sendBadge(target, videoBadge(check, settings, []));
    return { check };
  } catch (error) {
    if (error instanceof CheckError && SERVER_FETCH_CODES.has(error.code)) {
      return checkVideoFrame(target, settings, [`The server could not download the video (${error.detail})`]);
    }
    return failVideo(target, error);
  }
}
