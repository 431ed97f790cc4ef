/* Registered only while "scan pages automatically" is on: asks the background worker to scan this page. */
"use strict";

(globalThis.browser ?? globalThis.chrome).runtime.sendMessage({ type: "fakewatch:autoscan" });
