// The capture page's service worker: the page and its assets come from the cache, so the
// page opens with no link at all; each use refreshes the cache in the background. API
// requests are not touched (they must fail offline, so the page keeps its queue).
"use strict";

const CACHE = "diachiso-capture-1";
const SHELL = [
  "/capture",
  "/capture/app.js",
  "/capture/app.css",
  "/capture/manifest.webmanifest",
  "/capture/icon.svg",
  "/capture/icon-192.png",
  "/capture/icon-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((key) => key !== CACHE).map((key) => caches.delete(key))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || !SHELL.includes(url.pathname)) {
    return; // the network, as if there were no worker
  }
  event.respondWith(
    caches.open(CACHE).then(async (cache) => {
      const cached = await cache.match(url.pathname);
      const fresh = fetch(event.request)
        .then((response) => {
          if (response.ok) cache.put(url.pathname, response.clone());
          return response;
        })
        .catch(() => cached);
      return cached || fresh;
    }),
  );
});
