/* In the page: find the images a scan should check, read an image's bytes when the background worker cannot,
 * and draw the verdict badges. Injected on demand (and by auto-scan when it is switched on); injecting it twice
 * is harmless. */
(() => {
  "use strict";
  if (globalThis.__fakewatchContent) return;
  globalThis.__fakewatchContent = true;

  const ext = globalThis.browser ?? globalThis.chrome;
  const LAZY_ATTRIBUTES = ["data-src", "data-lazy-src", "data-original", "data-lazy"];
  const badges = new Map(); // image element -> badge host
  // Address -> the images showing it, so each badge does not re-read every image of a big page. Built when images
  // are collected, rebuilt on demand once images are added or change address.
  const imagesByUrl = new Map();
  let indexStale = true;
  const BADGE_STYLE = `
    :host { all: initial; position: absolute; z-index: 2147483647; font: 600 12px/1.3 system-ui, sans-serif; }
    .badge { display: inline-block; padding: 3px 8px; border-radius: 10px; color: #fff; background: #455a64;
             box-shadow: 0 1px 3px rgba(0,0,0,.4); cursor: default; white-space: nowrap; }
    :host([data-state="real"]) .badge { background: #1b7f3b; }
    :host([data-state="fake"]) .badge { background: #c62828; }
    :host([data-state="uncertain"]) .badge { background: #b26a00; }
    :host([data-state="error"]) .badge { background: #37474f; border: 2px solid #ff9800; }
    :host([data-state="pending"]) .badge::before { content: ""; display: inline-block; width: 8px; height: 8px;
             margin-right: 6px; border: 2px solid #fff; border-top-color: transparent; border-radius: 50%;
             animation: spin .8s linear infinite; vertical-align: -1px; }
    @keyframes spin { to { transform: rotate(360deg); } }
    .tip { display: none; margin-top: 4px; padding: 6px 8px; max-width: 320px; border-radius: 6px; background: #fff;
           color: #222; font-weight: 400; box-shadow: 0 2px 8px rgba(0,0,0,.35); white-space: normal; }
    :host(:hover) .tip, :host(:focus-within) .tip { display: block; }
    .tip p { margin: 0 0 3px; }
    .tip a { color: #1565c0; }
    .heatmap { display: block; margin: 4px 0; border: 1px solid #999; background: #eee; }
  `;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HEATMAP_PX = 120;

  ext.runtime.onMessage.addListener((message, _sender, sendResponse) => {
    if (message?.type === "fakewatch:badge") {
      sendResponse({ shown: showBadges(message.srcUrl, message.badge) });
    } else if (message?.type === "fakewatch:collect") {
      sendResponse(collectImages(message.minSize));
    } else if (message?.type === "fakewatch:frame") {
      sendResponse(captureFrame(message.url));
    } else if (message?.type === "fakewatch:read") {
      readInPage(message.url).then(sendResponse, (error) => sendResponse({ error: String(error.message || error) }));
      return true;
    }
    return false;
  });
  window.addEventListener("resize", () => badges.forEach((host, image) => placeBadge(host, image)));
  new MutationObserver((records) => {
    if (!indexStale) indexStale = records.some(touchesImages);
  }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["src", "srcset", ...LAZY_ATTRIBUTES] });

  function absoluteUrl(value) {
    try {
      return new URL(value, document.baseURI).href;
    } catch {
      return "";
    }
  }

  /** The largest candidate of a srcset, for lazy images that have not chosen one yet. */
  function largestSrcsetCandidate(srcset) {
    let best = "";
    let bestSize = -1;
    for (const part of (srcset || "").split(/,\s+/)) {
      const [url, descriptor = "1x"] = part.trim().split(/\s+/);
      const size = parseFloat(descriptor) || 1;
      if (url && size > bestSize) [best, bestSize] = [url, size];
    }
    return best ? absoluteUrl(best) : "";
  }

  /** The address of the picture a person sees (or will see once a lazy loader swaps it in). */
  function imageUrl(image) {
    const loaded = image.complete && image.naturalWidth > 1;
    const lazy = LAZY_ATTRIBUTES.map((name) => image.getAttribute(name)).find(Boolean);
    if (lazy && (!loaded || (image.currentSrc || image.src).startsWith("data:"))) return absoluteUrl(lazy);
    if (image.currentSrc) return image.currentSrc;
    if (image.src) return image.src;
    const source = image.parentElement?.tagName === "PICTURE" ? image.parentElement.querySelector("source[srcset]") : null;
    return largestSrcsetCandidate(source?.srcset || image.srcset);
  }

  function isShown(image) {
    if (typeof image.checkVisibility === "function") {
      return image.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
    }
    const style = getComputedStyle(image);
    return style.display !== "none" && style.visibility !== "hidden" && Number(style.opacity) > 0;
  }

  function isSvg(url) {
    return /^data:image\/svg/i.test(url) || /\.svgz?(?:[?#]|$)/i.test(url);
  }

  /** Eligible images' addresses (each once), and how many were skipped for which reason. */
  function collectImages(minSize) {
    const urls = new Set();
    const skipped = { small: 0, hidden: 0, svg: 0 };
    imagesByUrl.clear();
    indexStale = false;
    for (const image of document.images) {
      const rect = image.getBoundingClientRect();
      const url = imageUrl(image);
      indexImage(image, url);
      if (!url) continue;
      // A lazy image's placeholder says nothing about the size of the picture that will replace it.
      const showsUrl = image.currentSrc === url || image.src === url;
      if (!isShown(image) || rect.width === 0 || rect.height === 0) skipped.hidden += 1;
      else if (rect.width < minSize || rect.height < minSize) skipped.small += 1;
      // A tracking pixel or icon stretched by CSS is still tiny.
      else if (showsUrl && image.complete && image.naturalWidth > 0 && (image.naturalWidth < minSize || image.naturalHeight < minSize)) skipped.small += 1;
      else if (isSvg(url)) skipped.svg += 1;
      else urls.add(url);
    }
    return { images: Array.from(urls), skipped };
  }

  /** Whether a mutation may have added an image or changed what one shows (our own badges do neither). */
  function touchesImages(record) {
    if (record.type === "attributes") return record.target.nodeName === "IMG" || record.target.nodeName === "SOURCE";
    return Array.from(record.addedNodes).some((node) => node.nodeName === "IMG" || node.querySelector?.("img, source"));
  }

  function indexImage(image, url) {
    for (const key of new Set([url, image.currentSrc, image.src])) {
      if (!key) continue;
      if (!imagesByUrl.has(key)) imagesByUrl.set(key, []);
      imagesByUrl.get(key).push(image);
    }
  }

  function rebuildIndex() {
    imagesByUrl.clear();
    indexStale = false;
    for (const image of document.images) indexImage(image, imageUrl(image));
  }

  function imageShows(image, url) {
    return image.currentSrc === url || image.src === url || imageUrl(image) === url;
  }

  function matchingImages(url) {
    if (indexStale) rebuildIndex();
    const indexed = (imagesByUrl.get(url) || []).filter((image) => image.isConnected && imageShows(image, url));
    if (indexed.length > 0) return indexed;
    // Not every change is a mutation (a lazy image finishing loading, srcset choosing another candidate): look at all.
    const found = Array.from(document.images).filter((image) => imageShows(image, url));
    if (found.length > 0) imagesByUrl.set(url, found);
    return found;
  }

  function placeBadge(host, image) {
    const rect = image.getBoundingClientRect();
    host.style.top = `${rect.top + window.scrollY + 6}px`;
    host.style.left = `${rect.left + window.scrollX + 6}px`;
  }

  function badgeHost(image) {
    let host = badges.get(image);
    if (host && host.isConnected) return host;
    host = document.createElement("div");
    host.setAttribute("data-fakewatch-badge", "");
    host.attachShadow({ mode: "open" });
    document.documentElement.appendChild(host);
    badges.set(image, host);
    return host;
  }

  function renderBadge(host, badge) {
    const root = host.shadowRoot;
    root.replaceChildren();
    const style = document.createElement("style");
    style.textContent = BADGE_STYLE;
    const label = document.createElement("span");
    label.className = "badge";
    label.tabIndex = 0;
    label.textContent = badge.text;
    const tip = document.createElement("div");
    tip.className = "tip";
    for (const line of badge.details || []) {
      const paragraph = document.createElement("p");
      paragraph.textContent = line;
      tip.appendChild(paragraph);
    }
    if (badge.heatmap) tip.appendChild(heatmapSvg(badge.heatmap));
    if (badge.link) {
      const link = document.createElement("a");
      link.href = badge.link.href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.textContent = badge.link.text;
      tip.appendChild(link);
    }
    root.append(style, label);
    if (tip.childElementCount > 0) root.appendChild(tip);
    host.dataset.state = badge.state;
    host.dataset.text = badge.text;
  }

  /** The detector's per-crop scores drawn as boxes over the image's outline: redder where a crop scored more
   * fake. Built from numbers only (no markup from the page or the server). */
  function heatmapSvg({ regions, width, height }) {
    const scale = HEATMAP_PX / Math.max(width, height, 1);
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "heatmap");
    svg.setAttribute("width", String(Math.round(width * scale)));
    svg.setAttribute("height", String(Math.round(height * scale)));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("aria-label", "Heat map of the detector's per-crop scores");
    for (const region of regions) {
      const [x0, y0, x1, y1] = region.box.map(Number);
      const score = Math.min(Math.max(Number(region.score), 0), 1);
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("x", String(x0));
      rect.setAttribute("y", String(y0));
      rect.setAttribute("width", String(Math.max(x1 - x0, 0)));
      rect.setAttribute("height", String(Math.max(y1 - y0, 0)));
      rect.setAttribute("fill", `rgb(${Math.round(255 * score)}, 40, ${Math.round(255 * (1 - score))})`);
      rect.setAttribute("fill-opacity", "0.45");
      rect.setAttribute("data-score", score.toFixed(2));
      svg.appendChild(rect);
    }
    return svg;
  }

  /** The address a <video> plays: the one chosen, its src, or its first <source>. */
  function videoUrl(video) {
    return video.currentSrc || video.src || absoluteUrl(video.querySelector("source[src]")?.getAttribute("src") || "");
  }

  function matchingVideos(url) {
    return Array.from(document.querySelectorAll("video")).filter((video) => video.currentSrc === url || video.src === url
      || videoUrl(video) === url || Array.from(video.querySelectorAll("source[src]")).some((source) => source.src === url));
  }

  /** The frame a <video> shows now, as a PNG data: URL and its time. A cross-origin video taints the canvas: then
   * the page may show the frame but nobody may read it, and the answer says so. */
  function captureFrame(url) {
    const videos = matchingVideos(url);
    const video = videos.find((candidate) => candidate.readyState >= 2 && candidate.videoWidth > 0);
    if (!video) {
      return videos.length === 0
        ? { code: "video_not_found", error: "No video on the page plays this address any more." }
        : { code: "no_frame", error: "The video has no frame on screen yet: play it a moment, then check again." };
    }
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    try {
      return { dataUrl: canvas.toDataURL("image/png"), time_s: video.currentTime };
    } catch (error) {
      if (error?.name !== "SecurityError") return { code: "no_frame", error: String(error.message || error) };
      return { code: "tainted_frame",
        error: "The video comes from another site that does not let this page read its pixels (no CORS), so the frame on screen cannot be checked." };
    }
  }

  function showBadges(url, badge) {
    const images = [...matchingImages(url), ...matchingVideos(url)];
    for (const image of images) {
      const host = badgeHost(image);
      host.dataset.src = url.startsWith("data:") ? "data:" : url;
      renderBadge(host, badge);
      placeBadge(host, image);
    }
    return images.length;
  }

  function blobToDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  /** The bytes as the page sees them: its blob: URLs, its cookies and referrer; else the pixels it already drew. */
  async function readInPage(url) {
    try {
      const response = await fetch(url, { credentials: "include" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return { dataUrl: await blobToDataUrl(await response.blob()) };
    } catch (error) {
      const image = matchingImages(url).find((candidate) => candidate.complete && candidate.naturalWidth > 0);
      if (!image) throw error;
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      canvas.getContext("2d").drawImage(image, 0, 0);
      // Throws for a cross-origin picture the page may show but not read: then there is nothing more to try.
      return { dataUrl: canvas.toDataURL("image/png") };
    }
  }
})();
