// The capture page: GPS with a live accuracy readout, the household form, and an offline
// queue in IndexedDB that is sent to POST /api/v1/submissions in batches when there is a
// link. Every household gets its UUID when it is captured, so a resend after a lost answer
// is idempotent on the server. Validation is the server's: results come back per household.
"use strict";

(() => {
  const KEY = "diachiso.capture.";
  const DB_NAME = "diachiso-capture";
  const STORE = "households";
  const SYNC_EVERY_MS = 20000;
  const STATUS_TEXT = {
    queued: "Chờ gửi",
    accepted: "Đã nhận",
    flagged: "Chờ kiểm duyệt",
    rejected: "Bị từ chối",
    conflict: "Trùng mã, khác nội dung",
  };

  const $ = (id) => document.getElementById(id);
  const state = { token: null, config: null, fix: null, syncing: false, db: null, waiting: 0 };

  // --- storage: the queue in IndexedDB (survives reloads), settings in localStorage -------

  function openDb() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "id" });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  function withStore(mode, work) {
    return new Promise((resolve, reject) => {
      const tx = state.db.transaction(STORE, mode);
      const result = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
      tx.onerror = () => reject(tx.error);
    });
  }

  const allHouseholds = async () =>
    ((await withStore("readonly", (s) => s.getAll())) || []).sort((a, b) => b.created - a.created);
  const putHousehold = (record) => withStore("readwrite", (s) => s.put(record));
  const deleteHousehold = (id) => withStore("readwrite", (s) => s.delete(id));

  const remember = (name, value) =>
    value === null ? localStorage.removeItem(KEY + name) : localStorage.setItem(KEY + name, JSON.stringify(value));
  const recall = (name) => JSON.parse(localStorage.getItem(KEY + name) || "null");

  // --- the API --------------------------------------------------------------------------

  function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) };
    return fetch(path, { ...options, headers, cache: "no-store" });
  }

  async function login(token) {
    state.token = token;
    let response;
    try {
      response = await api("/api/v1/capture/config");
    } catch (error) {
      return "Không kết nối được máy chủ. Cần có mạng cho lần đăng nhập đầu tiên.";
    }
    if (response.status === 401) return "Token không hợp lệ hoặc đã bị thu hồi.";
    if (response.status === 403) return "Token này không phải của người thu thập (surveyor).";
    if (!response.ok) return `Máy chủ trả lời ${response.status}; hãy thử lại.`;
    state.config = await response.json();
    remember("token", token);
    remember("config", state.config);
    return null;
  }

  async function refreshConfig() {
    // The team's hamlets may change: refresh when online, keep the cached copy otherwise.
    try {
      const response = await api("/api/v1/capture/config");
      if (response.status === 401) return showLogin("Token đã bị thu hồi: hãy dán token mới.");
      if (response.ok) {
        state.config = await response.json();
        remember("config", state.config);
        renderUnits();
      }
    } catch (error) {
      /* offline: the cached configuration stands */
    }
  }

  // --- GPS ------------------------------------------------------------------------------

  function startGps() {
    if (!("geolocation" in navigator)) {
      $("gps-status").textContent = "Thiết bị không có GPS.";
      return;
    }
    navigator.geolocation.watchPosition(
      (position) => {
        const c = position.coords;
        const at = position.timestamp || Date.now();
        state.fix = { lat: c.latitude, lon: c.longitude, accuracy_m: c.accuracy, at };
        renderGps();
      },
      (error) => {
        $("gps-status").textContent =
          error.code === 1 ? "Chưa cho phép truy cập vị trí: hãy bật trong cài đặt trình duyệt." : "Đang chờ tín hiệu GPS…";
      },
      { enableHighAccuracy: true, maximumAge: 0, timeout: 60000 },
    );
  }

  function renderGps() {
    const fix = state.fix;
    if (!fix || !state.config) return;
    const { accuracy_target_m: target, accuracy_warn_m: warn, accuracy_hard_m: hard } = state.config;
    const panel = $("gps");
    const accuracy = Math.round(fix.accuracy_m * 10) / 10;
    $("gps-accuracy").textContent = `±${accuracy} m`;
    $("gps-coords").textContent = `${fix.lat.toFixed(6)}, ${fix.lon.toFixed(6)}`;
    const good = accuracy <= target;
    panel.className = "gps " + (good ? "good" : accuracy <= warn ? "ok" : "bad");
    $("gps-status").textContent = good
      ? `Đạt yêu cầu (≤ ${target} m): có thể lưu.`
      : `Đang chờ độ chính xác ≤ ${target} m…`;
    $("save").disabled = !good;
    $("save-anyway").hidden = good || accuracy > hard;
  }

  // --- capture --------------------------------------------------------------------------

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function localIso(ms) {
    // The phone's own offset (+07:00): the server refuses times without one.
    const d = new Date(ms);
    const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");
    const offset = -d.getTimezoneOffset();
    const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return `${date}T${time}${offset >= 0 ? "+" : "-"}${pad(offset / 60)}:${pad(offset % 60)}`;
  }

  const text = (id) => $(id).value.trim() || null;

  function householdItem(fix) {
    const members = $("members").value.trim();
    return {
      id: newId(),
      captured_at: localIso(fix.at),
      location: { lat: fix.lat, lon: fix.lon, accuracy_m: Math.round(fix.accuracy_m * 10) / 10 },
      hamlet_code: $("hamlet").value,
      household: {
        head_name: text("head_name"),
        house_number: text("house_number"),
        street: text("street"),
        phone: text("phone"),
        kind: $("kind").value,
        members: members === "" ? null : Number(members),
      },
      note: text("note"),
    };
  }

  async function capture() {
    const fix = state.fix;
    $("form-error").textContent = "";
    if (!fix) return;
    if (!$("hamlet").value) {
      $("form-error").textContent = "Hãy chọn ấp/khóm.";
      return;
    }
    const item = householdItem(fix);
    await putHousehold({ id: item.id, item, state: "queued", result: null, created: Date.now() });
    for (const id of ["head_name", "house_number", "street", "phone", "members", "note"]) $(id).value = "";
    $("kind").value = "residence";
    await renderQueue();
    sync();
  }

  // --- sync: batches of queued households, one request at a time -----------------------

  async function sync() {
    if (state.syncing || !state.token) return;
    state.syncing = true;
    try {
      for (;;) {
        const queued = (await allHouseholds()).filter((r) => r.state === "queued").reverse();
        const batch = queued.slice(0, state.config.batch_size);
        if (!batch.length) break;
        let response;
        try {
          response = await api("/api/v1/submissions", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ submissions: batch.map((r) => r.item) }),
          });
        } catch (error) {
          setSyncStatus("Chưa có mạng: các hộ được giữ trên máy và sẽ tự gửi khi có kết nối.");
          break;
        }
        if (response.status === 401) {
          showLogin("Token đã bị thu hồi: hãy dán token mới để gửi các hộ đang chờ.");
          break;
        }
        if (!response.ok) {
          setSyncStatus(`Máy chủ trả lời ${response.status}; sẽ thử gửi lại.`);
          break;
        }
        const body = await response.json();
        // Results come in request order, one per item.
        await Promise.all(batch.map((r, i) => putHousehold({ ...r, state: "done", result: body.results[i] })));
        setSyncStatus(`Đã gửi lúc ${new Date().toLocaleTimeString("vi-VN")}.`);
        await renderQueue();
      }
    } finally {
      state.syncing = false;
    }
  }

  const setSyncStatus = (message) => ($("sync-status").textContent = message);

  // --- rendering ------------------------------------------------------------------------

  function renderUnits() {
    const hamlets = state.config.hamlets;
    const communes = [...new Map(hamlets.map((h) => [h.commune_code, h.commune_name])).entries()];
    const commune = $("commune");
    const chosen = recall("commune");
    commune.replaceChildren(...communes.map(([code, name]) => new Option(name, code)));
    if (communes.some(([code]) => code === chosen)) commune.value = chosen;
    renderHamlets();
    $("form-error").textContent = hamlets.length ? "" : "Tổ chưa được giao ấp/khóm nào: hãy báo quản trị viên.";
  }

  function renderHamlets() {
    const commune = $("commune").value;
    const hamlet = $("hamlet");
    const chosen = recall("hamlet");
    const options = state.config.hamlets.filter((h) => h.commune_code === commune);
    hamlet.replaceChildren(...options.map((h) => new Option(h.name, h.code)));
    if (options.some((h) => h.code === chosen)) hamlet.value = chosen;
  }

  function element(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  async function renderQueue() {
    const records = await allHouseholds();
    state.waiting = records.filter((r) => r.state === "queued").length;
    $("queue-count").textContent = `${records.length} hộ trên máy, ${state.waiting} hộ chờ gửi.`;
    renderNet();
    const hamletNames = new Map(state.config.hamlets.map((h) => [h.code, h.name]));
    $("queue").replaceChildren(...records.map((r) => queueEntry(r, hamletNames)));
  }

  function queueEntry(record, hamletNames) {
    const { item, result } = record;
    const status = result ? result.status : "queued";
    const li = element("li", `hh state-${status}`);
    li.dataset.id = item.id;
    const head = element("div", "hh-head");
    head.append(element("strong", "", item.household.head_name || "(chưa có tên chủ hộ)"));
    head.append(element("span", "badge", STATUS_TEXT[status] || status));
    li.append(head);
    const when = new Date(record.created).toLocaleTimeString("vi-VN", { hour: "2-digit", minute: "2-digit" });
    const where = [item.household.house_number, hamletNames.get(item.hamlet_code) || item.hamlet_code];
    const meta = [...where.filter(Boolean), when, `±${item.location.accuracy_m} m`].join(" · ");
    li.append(element("div", "hh-meta", meta));
    if (result && result.address_code) li.append(element("div", "hh-code", `Mã địa chỉ: ${result.address_code}`));
    const issues = result ? result.issues.filter((i) => i.severity !== "info" || status === "rejected") : [];
    if (issues.length) {
      const list = element("ul", "issues");
      list.append(...issues.map((i) => element("li", "", i.message)));
      li.append(list);
    }
    return li;
  }

  function renderNet() {
    const online = navigator.onLine;
    const waiting = state.waiting ? ` · ${state.waiting} chờ gửi` : "";
    $("net").textContent = (online ? "Trực tuyến" : "Ngoại tuyến") + waiting;
    $("net").className = online ? "net" : "net offline";
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("capture").hidden = true;
    $("login-error").textContent = message || "";
  }

  function showCapture() {
    const user = state.config.user;
    $("login").hidden = true;
    $("capture").hidden = false;
    $("queue-section").hidden = false;
    $("who").textContent = `${user.name} · ${user.team || ""}`;
    renderUnits();
    renderGps();
    renderQueue();
  }

  // --- wiring ---------------------------------------------------------------------------

  async function start() {
    state.db = await openDb();
    renderNet();
    window.addEventListener("online", () => {
      renderNet();
      refreshConfig();
      sync();
    });
    window.addEventListener("offline", renderNet);
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const problem = await login($("token").value.trim());
      if (problem) return showLogin(problem);
      $("token").value = "";
      showCapture();
      sync();
    });
    $("household-form").addEventListener("submit", (event) => {
      event.preventDefault();
      capture();
    });
    $("save-anyway").addEventListener("click", capture);
    $("commune").addEventListener("change", () => {
      remember("commune", $("commune").value);
      renderHamlets();
    });
    $("hamlet").addEventListener("change", () => remember("hamlet", $("hamlet").value));
    $("sync").addEventListener("click", sync);
    $("clear-done").addEventListener("click", async () => {
      for (const r of await allHouseholds()) if (r.state === "done") await deleteHousehold(r.id);
      renderQueue();
    });
    $("logout").addEventListener("click", () => {
      remember("token", null);
      state.token = null;
      showLogin("");
    });
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register("/capture/sw.js", { scope: "/capture" }).catch(() => {});
    }
    state.token = recall("token");
    state.config = recall("config");
    startGps();
    setInterval(sync, SYNC_EVERY_MS);
    if (!state.token || !state.config) return showLogin("");
    showCapture();
    refreshConfig();
    sync();
  }

  start();
})();
