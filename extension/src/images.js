/* Reading an image's bytes for a check, in the background worker (classic script: defines globals).
 * The worker fetches the bytes itself, with the person's cookies, so images behind a login work and the server
 * never fetches URLs on this path. Where that fails (blob: URLs, hotlink protection that wants the page as
 * referrer) the page's content script reads them instead. */
"use strict";

// The server's defaults (FAKEWATCH_MAX_IMAGE_BYTES, FAKEWATCH_MAX_IMAGE_PIXELS): bigger images are shrunk first.
const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;
const MAX_PIXELS = 40_000_000;
// Far more detail than any detector input needs, far below the server's caps.
const RESIZED_MAX_SIDE = 4096;

const IMAGE_MAGIC = [
  [[0xff, 0xd8, 0xff], 0],
  [[0x89, 0x50, 0x4e, 0x47], 0],
  [[0x47, 0x49, 0x46, 0x38], 0], // GIF8
  [[0x42, 0x4d], 0], // BM
  [[0x57, 0x45, 0x42, 0x50], 8], // WEBP
  [[0x66, 0x74, 0x79, 0x70], 4], // ftyp: HEIC, AVIF
  [[0x49, 0x49, 0x2a, 0x00], 0], // TIFF: the server names it in its refusal
  [[0x4d, 0x4d, 0x00, 0x2a], 0],
];

function startsWith(bytes, magic, offset) {
  return magic.every((value, index) => bytes[offset + index] === value);
}

/** "image", "svg" or "not_image", from the first bytes (and the declared type, which pages often get wrong). */
function sniffKind(bytes, declaredType) {
  if (IMAGE_MAGIC.some(([magic, offset]) => startsWith(bytes, magic, offset))) return "image";
  const head = new TextDecoder().decode(bytes.slice(0, 512)).trimStart().toLowerCase();
  if (declaredType.includes("svg") || head.startsWith("<svg") || (head.startsWith("<?xml") && head.includes("<svg"))) return "svg";
  return declaredType.startsWith("image/") ? "image" : "not_image";
}

async function readViaPage(target) {
  const reply = await ext.tabs.sendMessage(target.tabId, { type: "fakewatch:read", url: target.srcUrl }, { frameId: target.frameId });
  if (!reply || reply.error) {
    throw errorFromCode("fetch_failed", `The image could not be read from the page: ${(reply && reply.error) || "no answer"}.`);
  }
  return (await fetch(reply.dataUrl)).blob();
}

async function readDirectly(url) {
  const response = await fetch(url, { credentials: "include" });
  if (!response.ok) throw errorFromCode("fetch_failed", `The image's server answered HTTP ${response.status}.`);
  return response.blob();
}

/** The image's bytes as a Blob, refusing SVG drawings and things that are not images with a clear message. */
async function readImageBytes(target) {
  let blob;
  if (target.srcUrl.startsWith("blob:")) {
    blob = await readViaPage(target);
  } else {
    try {
      blob = await readDirectly(target.srcUrl);
    } catch (error) {
      if (target.srcUrl.startsWith("data:")) throw errorFromCode("invalid_image", "This data: URL could not be read.");
      blob = await readViaPage(target).catch(() => { throw error; });
    }
  }
  const kind = sniffKind(new Uint8Array(await blob.slice(0, 512).arrayBuffer()), blob.type || "");
  if (kind === "svg") throw errorFromCode("svg", "This is an SVG drawing, not a photo: fakewatch checks photos and pixel images.");
  if (kind === "not_image") throw errorFromCode("not_image", `This is not an image (the address returned ${blob.type || "unknown content"}).`);
  return blob;
}

function needsShrinking(blob) {
  return blob.size > MAX_UPLOAD_BYTES;
}

/** A JPEG copy small enough for the server; the verdict is then about the resized picture. */
async function shrinkImage(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch {
    throw errorFromCode("too_large", "The image is larger than the server accepts and the browser could not decode it to shrink it.");
  }
  const scale = Math.min(1, RESIZED_MAX_SIDE / Math.max(bitmap.width, bitmap.height),
    Math.sqrt(MAX_PIXELS / (bitmap.width * bitmap.height)));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(width, height);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  return canvas.convertToBlob({ type: "image/jpeg", quality: 0.92 });
}
